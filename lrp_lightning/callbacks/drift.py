"""Explanation drift: how far the explanation of the fixed samples moved since the last logged epoch.

Per explainer, two values compare this epoch's attributions R_t with the previous logged ones
R_{t-1} of the same samples (see :mod:`lrp_lightning.callbacks.similarity`):

- ``drift_rank`` = 1 − mean over samples of the Spearman rank correlation of R_{t-1} and R_t;
- ``drift_topk`` = 1 − mean IoU of the top 10 % features by magnitude |R|.

Both are exactly 0 when the attributions did not change.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.callbacks.similarity import spearman, topk_iou

DRIFT_METRICS = ("drift_rank", "drift_topk")


class DriftTracker:
    """Holds the last attributions per explainer and measures the drift of the next ones."""

    def __init__(self) -> None:
        self.previous: dict[str, torch.Tensor] = {}

    def update(self, name: str, relevance: torch.Tensor) -> Optional[dict[str, float]]:
        """Store ``relevance`` for ``name`` and return its drift from the stored one.

        Parameters
        ----------
        name : str
            The explainer's display name.
        relevance : torch.Tensor
            This epoch's attributions of the fixed samples (any device; kept on the CPU).

        Returns
        -------
        dict of str to float, or None
            ``{"drift_rank", "drift_topk"}``; None for the first epoch or when the samples' shape
            changed.
        """
        current = relevance.detach().float().cpu()
        previous = self.previous.get(name)
        self.previous[name] = current
        if previous is None or previous.shape != current.shape:
            return None
        return {
            "drift_rank": float(1.0 - spearman(previous, current).mean()),
            "drift_topk": float(1.0 - topk_iou(previous.abs(), current.abs()).mean()),
        }

    def state_dict(self) -> dict[str, Any]:
        """The stored attributions, so that a resumed run continues the series.

        Returns
        -------
        dict
            Explainer name to its last attributions.
        """
        return dict(self.previous)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state : dict
            Explainer name to attributions.
        """
        self.previous = {name: torch.as_tensor(value).float().cpu() for name, value in state.items()}
