"""A tiny pure-PyTorch transformer text classifier, as a LightningModule."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

import lightning.pytorch as pl


class TinyTextTransformer(pl.LightningModule):
    """Token and position embeddings, ``nn.TransformerEncoderLayer`` blocks, mean pooling, a Linear head.

    ``forward(input_ids, attention_mask=None)``: ids (N, T) and an optional mask (N, T; 0 at padding,
    which no token attends to and the pooling skips) give class logits (N, num_classes) from the
    mean of the final hidden states. The encoder layers are pre-norm, GELU, without dropout.

    Parameters
    ----------
    vocab_size : int
        Number of token ids.
    max_length : int
        Longest sequence (number of position embeddings).
    num_classes : int
        Output classes.
    dim : int
        Token width.
    num_heads : int
        Attention heads per layer.
    num_layers : int
        Encoder layers.
    lr : float
        Adam's learning rate (decayed to zero over the fit by a cosine).
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        num_classes: int = 2,
        dim: int = 32,
        num_heads: int = 2,
        num_layers: int = 2,
        lr: float = 3e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Parameter(0.02 * torch.randn(1, max_length, dim))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, num_heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Class logits (N, num_classes) for token ids (N, T)."""
        hidden = self.token_embedding(input_ids) + self.position_embedding[:, : input_ids.shape[1]]
        padding = None if attention_mask is None else attention_mask == 0
        for layer in self.layers:
            hidden = layer(hidden, src_key_padding_mask=padding)
        hidden = self.norm(hidden)
        if attention_mask is None:
            return self.head(hidden.mean(dim=1))
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return self.head((hidden * weights).sum(dim=1) / weights.sum(dim=1))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = F.cross_entropy(logits, batch["labels"])
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", (logits.argmax(dim=1) == batch["labels"]).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Cross-entropy loss of one batch; logs ``train/loss`` and ``train/acc``."""
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Logs ``val/loss`` and ``val/acc``."""
        self._step(batch, "val")

    def configure_optimizers(self) -> dict:
        """Adam with the configured learning rate, annealed to zero over the fit by a per-step cosine."""
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
