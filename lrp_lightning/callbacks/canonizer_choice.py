"""``canonizers="auto"``: choosing canonizers from a model's architecture.

torchvision ResNets get :class:`~lrp_lightning.torchvision.ResNetCanonizer`, torchvision VGGs
:class:`~lrp_lightning.torchvision.VGGCanonizer`, any other model in which a BatchNorm directly
follows a linear or convolutional layer (in module order)
:class:`~lrp_lightning.canonizers.SequentialMergeBatchNorm`, everything else none.
"""
from __future__ import annotations

import sys
from typing import Optional

from torch import nn

from lrp_lightning.canonizers import Canonizer, SequentialMergeBatchNorm
from lrp_lightning.core import collect_leaves
from lrp_lightning.types import BatchNorm, Linear


def _torchvision_family(model: nn.Module) -> Optional[str]:
    """``"resnet"``/``"vgg"`` if ``model`` contains a torchvision ResNet/VGG (torchvision not imported otherwise)."""
    models = getattr(sys.modules.get("torchvision"), "models", None)
    if models is None:
        return None
    for module in model.modules():
        if isinstance(module, models.ResNet):
            return "resnet"
        if isinstance(module, models.VGG):
            return "vgg"
    return None


def batch_norm_follows_linear(model: nn.Module) -> bool:
    """Whether some BatchNorm directly follows a linear/conv layer among ``model``'s leaves.

    Parameters
    ----------
    model : torch.nn.Module
        The model.

    Returns
    -------
    bool
        True if a merge candidate exists.
    """
    leaves = list(collect_leaves(model))
    return any(isinstance(a, Linear) and isinstance(b, BatchNorm) for a, b in zip(leaves, leaves[1:]))


def auto_canonizers(model: nn.Module) -> list[Canonizer]:
    """Fresh canonizer instances suiting ``model`` (see module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The explained model.

    Returns
    -------
    list of Canonizer
        Possibly empty.
    """
    family = _torchvision_family(model)
    if family is not None:
        from lrp_lightning.torchvision import ResNetCanonizer, VGGCanonizer

        return [ResNetCanonizer() if family == "resnet" else VGGCanonizer()]
    if batch_norm_follows_linear(model):
        return [SequentialMergeBatchNorm()]
    return []
