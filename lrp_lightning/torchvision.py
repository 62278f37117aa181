"""Canonizers for torchvision's VGG, ResNet and VisionTransformer models (torchvision is imported only when applied)."""
from __future__ import annotations

import torch

from lrp_lightning.attention import MultiheadAttentionCanonizer
from lrp_lightning.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from lrp_lightning.layer import Sum


def _residual_blocks():
    from torchvision.models.resnet import BasicBlock, Bottleneck

    return BasicBlock, Bottleneck


def _basic_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    out = self.canonizer_sum(torch.stack([identity, out], dim=-1))
    return self.relu(out)


def _bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    out = self.canonizer_sum(torch.stack([identity, out], dim=-1))
    return self.relu(out)


class ResidualBlockCanonizer(AttributeCanonizer):
    """Make the residual addition of torchvision's BasicBlock and Bottleneck an explicit :class:`Sum` module."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module):
        basic_block, bottleneck = _residual_blocks()
        if isinstance(module, bottleneck):
            return {"forward": _bottleneck_forward, "canonizer_sum": Sum()}
        if isinstance(module, basic_block):
            return {"forward": _basic_block_forward, "canonizer_sum": Sum()}
        return None


class VGGCanonizer(CompositeCanonizer):
    """Canonizer for torchvision VGG models: merges each BatchNorm into the convolution before it."""

    def __init__(self) -> None:
        super().__init__([SequentialMergeBatchNorm()])


class ResNetCanonizer(CompositeCanonizer):
    """Canonizer for torchvision ResNet models: merges BatchNorms and makes residual additions explicit."""

    def __init__(self) -> None:
        super().__init__([SequentialMergeBatchNorm(), ResidualBlockCanonizer()])


class VisionTransformerCanonizer(CompositeCanonizer):
    """Canonizer for torchvision ``VisionTransformer`` models: makes each ``nn.MultiheadAttention``
    explicit (see :class:`lrp_lightning.attention.MultiheadAttentionCanonizer`); the rest of the
    model (LayerNorm, GELU, Linear and convolution modules, residual additions) needs no change."""

    def __init__(self) -> None:
        super().__init__([MultiheadAttentionCanonizer()])
