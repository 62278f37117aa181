"""Canonizers for torchvision's VGG, ResNet and VisionTransformer models (torchvision is imported only when applied)."""
from __future__ import annotations

import sys

import torch

from lrp_lightning.auto_canonizers import register_auto_canonizer
from lrp_lightning.canonizers import BATCH_NORM_MERGE, AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from lrp_lightning.transformer.attention import MultiheadAttentionCanonizer
from lrp_lightning.layer import Sum


def _residual_blocks():
    from torchvision.models.resnet import BasicBlock, Bottleneck

    return BasicBlock, Bottleneck


def _basic_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``BasicBlock.forward`` with the residual addition as the explicit ``canonizer_sum``."""
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    out = self.canonizer_sum(torch.stack([identity, out]))
    return self.relu(out)


def _bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``Bottleneck.forward`` with the residual addition as the explicit ``canonizer_sum``."""
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    out = self.canonizer_sum(torch.stack([identity, out]))
    return self.relu(out)


class _ResidualBlockCanonizer(AttributeCanonizer):
    """Make the residual addition of one kind of torchvision ResNet block an explicit :class:`Sum` module."""

    block_index: int
    block_forward: staticmethod

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    def _attribute_map(self, name: str, module: torch.nn.Module):
        if isinstance(module, _residual_blocks()[self.block_index]):
            # stacked along a new first dimension: both summands stay contiguous, and the sum and its rule
            # run over contiguous halves (several times faster on the CPU than a last dimension of size 2)
            return {"forward": self.block_forward.__get__(module), "canonizer_sum": Sum(dim=0)}
        return None


class ResNetBasicBlockCanonizer(_ResidualBlockCanonizer):
    """Make the residual addition of torchvision's ``BasicBlock`` an explicit :class:`Sum` module."""

    block_index = 0
    block_forward = staticmethod(_basic_block_forward)


class ResNetBottleneckCanonizer(_ResidualBlockCanonizer):
    """Make the residual addition of torchvision's ``Bottleneck`` an explicit :class:`Sum` module."""

    block_index = 1
    block_forward = staticmethod(_bottleneck_forward)


class VGGCanonizer(CompositeCanonizer):
    """Canonizer for torchvision VGG models: merges each BatchNorm into the convolution before it."""

    def __init__(self) -> None:
        super().__init__([SequentialMergeBatchNorm()])


class ResNetCanonizer(CompositeCanonizer):
    """Canonizer for torchvision ResNet models: merges BatchNorms and makes residual additions explicit."""

    def __init__(self) -> None:
        super().__init__([SequentialMergeBatchNorm(), ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()])


class VisionTransformerCanonizer(CompositeCanonizer):
    """Canonizer for torchvision ``VisionTransformer`` models: makes each ``nn.MultiheadAttention``
    explicit (see :class:`lrp_lightning.transformer.attention.MultiheadAttentionCanonizer`); the rest of the
    model (LayerNorm, GELU, Linear and convolution modules, residual additions) needs no change."""

    def __init__(self) -> None:
        super().__init__([MultiheadAttentionCanonizer()])


def _is_torchvision_model(module: torch.nn.Module, class_name: str) -> bool:
    """Whether ``module`` is a torchvision ``models.<class_name>`` (torchvision is not imported for this)."""
    models = getattr(sys.modules.get("torchvision"), "models", None)
    return models is not None and isinstance(module, getattr(models, class_name))


def is_resnet(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a torchvision ``ResNet`` (the detector of ``canonizers="auto"``)."""
    return _is_torchvision_model(module, "ResNet")


def is_vgg(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a torchvision ``VGG`` (the detector of ``canonizers="auto"``)."""
    return _is_torchvision_model(module, "VGG")


register_auto_canonizer("torchvision ResNet", is_resnet, ResNetCanonizer, covers=(BATCH_NORM_MERGE,))
register_auto_canonizer("torchvision VGG", is_vgg, VGGCanonizer, covers=(BATCH_NORM_MERGE,))
