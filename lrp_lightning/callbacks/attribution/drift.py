"""Explanation drift: how far the explanation of the fixed samples moved since the last logged epoch.

Per explainer, two values compare this epoch's attributions R_t with the previous logged ones
R_{t-1} of the same samples (see :mod:`lrp_lightning.metrics.similarity`):

- ``drift_rank`` = 1 − mean over samples of the Spearman rank correlation of R_{t-1} and R_t;
- ``drift_topk`` = 1 − mean IoU of the top 10 % features by magnitude ``|R|``.

Both are exactly 0 when the attributions did not change.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.metrics.similarity import feature_ranks, rank_correlation, set_iou, top_features

DRIFT_METRICS = ("drift_rank", "drift_topk")


class DriftTracker:
    """Holds the last attributions per explainer and measures the drift of the next ones.

    The ranks and top-feature sets of the stored attributions are kept with them, so that each
    epoch ranks and sorts only its own attributions.
    """

    def __init__(self) -> None:
        self.previous: dict[str, torch.Tensor] = {}
        self._summaries: dict[str, tuple] = {}

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
        previous_summary = self._summary(name) if previous is not None and previous.shape == current.shape else None
        self.previous[name] = current
        self._summaries[name] = summary = (feature_ranks(current), top_features(current.abs()))
        if previous_summary is None:
            return None
        return {
            "drift_rank": float(1.0 - rank_correlation(previous_summary[0], summary[0]).mean()),
            "drift_topk": float(1.0 - set_iou(previous_summary[1], summary[1]).mean()),
        }

    def _summary(self, name: str) -> tuple:
        """The ranks and top-feature set of the stored attributions of ``name`` (computed once)."""
        if name not in self._summaries:
            stored = self.previous[name]
            self._summaries[name] = (feature_ranks(stored), top_features(stored.abs()))
        return self._summaries[name]

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
        self._summaries = {}
