"""Non-finite explanations: finding their cause, keeping them out of the logs, warning once.

A model whose weights turned NaN or Inf explains nothing: its outputs and hence every relevance
are non-finite. A finite model can still yield non-finite relevance (a rule's denominator under- or
overflowing). Either way the callback logs no image of it, logs only the finite scalars, warns once
per explainer naming the cause, and training goes on.
"""
from __future__ import annotations

from typing import Optional

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lrp_lightning.callbacks.metric_set import MetricResults

MODEL_OUTPUT = "model output"
RELEVANCE = "relevance"


def nonfinite_cause(outputs: torch.Tensor, relevance: torch.Tensor) -> Optional[str]:
    """Why an explanation is not finite, or None when it is.

    Parameters
    ----------
    outputs : torch.Tensor
        The model's outputs for the samples.
    relevance : torch.Tensor
        The attributions of the samples.

    Returns
    -------
    str or None
        :data:`MODEL_OUTPUT` when the outputs contain NaN/Inf (the relevance then cannot be finite),
        :data:`RELEVANCE` when only the relevance does, None when both are finite.
    """
    if not bool(torch.isfinite(outputs).all()):
        return MODEL_OUTPUT
    if not bool(torch.isfinite(relevance).all()):
        return RELEVANCE
    return None


def finite_results(results: MetricResults) -> tuple[MetricResults, list[str]]:
    """The finite scalars and curves of ``results``, and the names of the scalars left out.

    Parameters
    ----------
    results : MetricResults
        What the metrics computed.

    Returns
    -------
    tuple
        ``(MetricResults with finite values only, sorted names of non-finite scalars)``.
    """
    scalars = {name: value for name, value in results.scalars.items() if torch.isfinite(torch.tensor(value))}
    curves = {name: curve for name, curve in results.curves.items() if bool(torch.isfinite(curve).all())}
    return MetricResults(scalars, curves), sorted(set(results.scalars) - set(scalars))


class NonFiniteWarnings:
    """Warns (rank zero, ``RuntimeWarning``) once per explainer about a non-finite explanation, and
    once per explainer and metric about a non-finite metric value of a finite explanation."""

    def __init__(self) -> None:
        self._warned: set = set()

    def warn(self, name: str, epoch: int, cause: Optional[str], dropped: list[str]) -> None:
        """Warn about explainer ``name``'s non-finite results, unless already warned.

        Parameters
        ----------
        name : str
            The explainer's display name.
        epoch : int
            The current epoch (for the message).
        cause : str or None
            From :func:`nonfinite_cause`.
        dropped : list of str
            Non-finite scalars left out of the logs.
        """
        if cause is not None and name not in self._warned:
            self._warned.add(name)
            reason = (
                "the model's outputs for the explained samples contain NaN/Inf (its weights or the samples are "
                "no longer finite), so no explanation can be"
                if cause == MODEL_OUTPUT
                else "its relevance contains NaN/Inf although the model's outputs are finite (a rule's "
                "denominator under- or overflowed; a larger epsilon or another composite may help)"
            )
            rank_zero_warn(
                f"AttributionCallback: {name}'s explanation at epoch {epoch} is not finite: {reason}. No heatmap is "
                f"logged while this lasts; scalars left out: {', '.join(dropped) or 'none'}. Warned once.",
                category=RuntimeWarning,
            )
        elif cause is None:
            for metric in dropped:
                if (name, metric) not in self._warned:
                    self._warned.add((name, metric))
                    rank_zero_warn(
                        f"AttributionCallback: metric {metric} of {name} is not finite at epoch {epoch} although the "
                        "explanation is; it is left out of the logs. Warned once.",
                        category=RuntimeWarning,
                    )
