"""The demo's classifier: a small CNN with BatchNorm, as a LightningModule."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import lightning.pytorch as pl


def conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Conv3x3 -> BatchNorm -> ReLU -> MaxPool(2), as a flat list for an ``nn.Sequential``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the convolution.

    Returns
    -------
    list of nn.Module
        The four layers of the block.
    """
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class ShapesClassifier(pl.LightningModule):
    """Training logic shared by the demo's classifiers: cross-entropy, accuracy logs, Adam with a
    cosine decay. Subclasses build the network in ``self.net`` and save ``lr`` as a hyperparameter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes), for images of shape (N, in_channels, H, W)."""
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        inputs, labels = batch[0], batch[1]
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", accuracy, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Cross-entropy loss of one batch; logs ``train/loss`` and ``train/acc``."""
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Logs ``val/loss`` and ``val/acc``."""
        self._step(batch, "val")

    def configure_optimizers(self) -> dict:
        """Adam with the configured learning rate, annealed to zero over the fit by a per-step cosine.

        The decay lets the last epochs settle, so the final validation accuracy (and the final
        heatmaps) do not depend on where in an oscillation training stopped.
        """
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        steps = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ShapesCNN(ShapesClassifier):
    """Four Conv-BN-ReLU-MaxPool blocks, global average pooling and a Linear head.

    Made for the demo's 64x64 RGB images but works for any image size and channel count.

    The layers live in one flat ``nn.Sequential`` (``self.net``), so
    ``SequentialMergeBatchNorm`` finds every Conv->BatchNorm pair.

    Parameters
    ----------
    num_classes : int
        Output classes.
    in_channels : int
        Channels of the input images.
    width : int
        Channels of the first block (doubled in each following block).
    lr : float
        Adam's initial learning rate (decayed to zero over the fit).
    """

    def __init__(self, num_classes: int = 3, in_channels: int = 3, width: int = 8, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        channels = [in_channels, width, 2 * width, 4 * width, 8 * width]
        blocks = [layer for c_in, c_out in zip(channels, channels[1:]) for layer in conv_block(c_in, c_out)]
        self.net = nn.Sequential(
            *blocks,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels[-1], num_classes),
        )


class ShapesViT(ShapesClassifier):
    """A small torchvision ``VisionTransformer`` for the demo's images.

    Square patches of ``patch_size`` pixels become tokens of width ``hidden_dim``; a class token and
    learned position embeddings are added; ``num_layers`` pre-norm encoder blocks (multi-head
    self-attention and a GELU MLP of width ``2 * hidden_dim``) follow, and a Linear head reads the
    class token. No dropout.

    Parameters
    ----------
    num_classes : int
        Output classes.
    image_size : int
        Side of the square input images (a multiple of ``patch_size``).
    patch_size : int
        Side of the square patches.
    num_layers : int
        Encoder blocks.
    num_heads : int
        Attention heads per block.
    hidden_dim : int
        Token width.
    lr : float
        Adam's initial learning rate (decayed to zero over the fit).
    """

    def __init__(
        self,
        num_classes: int = 3,
        image_size: int = 64,
        patch_size: int = 8,
        num_layers: int = 2,
        num_heads: int = 4,
        hidden_dim: int = 64,
        lr: float = 1e-3,
    ) -> None:
        from torchvision.models import VisionTransformer

        super().__init__()
        self.save_hyperparameters()
        self.net = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=2 * hidden_dim,
            num_classes=num_classes,
        )
