"""Explainers: registry names and composites turned into attributors for a model and its inputs.

A registry name (an LRP composite such as ``"epsilon_gamma_box"`` or an attributor such as
``"smoothgrad"``) or a :class:`~lrp_lightning.core.Composite` instance becomes an :class:`Explainer`
with :func:`build_explainer`, once the model and the samples are known (EpsilonGammaBox's bounds come
from the samples, ``canonizers="auto"`` from the model). The callbacks and the metrics that re-explain
(robustness, randomisation) build their explainers here, so both explain the same way.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from lrp_lightning.attribution import ATTRIBUTORS, Attributor, Gradient
from lrp_lightning.auto_canonizers import CanonizerArg, resolve_canonizers
from lrp_lightning.composites import COMPOSITES
from lrp_lightning.core import Composite
from lrp_lightning.transformer.tokens import is_token_ids
from lrp_lightning.types import Convolution

ExplainerSpec = Union[str, Composite]
Bound = Union[None, float, Sequence[float], torch.Tensor]

# deterministic settings for attributors built by name (same noise every epoch)
ATTRIBUTOR_DEFAULTS: dict = {"seed": 0}


def known_names() -> list[str]:
    """Every registry name the callback accepts: LRP composites, then attributors.

    Returns
    -------
    list of str
        Sorted composite names followed by sorted attributor names.
    """
    return sorted(COMPOSITES) + sorted(ATTRIBUTORS)


def check_spec(spec: Any) -> None:
    """Raise unless ``spec`` is a registry name (composite or attributor) or a Composite instance.

    Raises
    ------
    KeyError
        For an unknown name (the message lists the known ones).
    TypeError
        For anything else.
    """
    if isinstance(spec, str):
        if spec not in COMPOSITES and spec not in ATTRIBUTORS:
            raise KeyError(f"unknown composite {spec!r}; known names: {', '.join(known_names())}")
    elif not isinstance(spec, Composite):
        raise TypeError(
            f"composite must be a registry name or a Composite instance, got {type(spec).__name__}"
        )


@dataclass
class Explainer:
    """One way of explaining: an attributor class, its composite (None: not LRP) and settings.

    Attributes
    ----------
    name : str
        Display name, used in log tags.
    composite : Composite or None
        The LRP composite, or None for attributors without one.
    attributor_class : type
        An :class:`~lrp_lightning.attribution.Attributor` subclass.
    attributor_kwargs : dict
        Extra constructor arguments.
    """

    name: str
    composite: Optional[Composite]
    attributor_class: type = Gradient
    attributor_kwargs: dict = field(default_factory=dict)

    @property
    def is_lrp(self) -> bool:
        """Whether relevance is propagated by an LRP composite (so conservation applies)."""
        return self.composite is not None

    def attributor(self, model: nn.Module) -> Attributor:
        """A fresh attributor for ``model``.

        Parameters
        ----------
        model : torch.nn.Module
            The explained model.

        Returns
        -------
        Attributor
            Not yet entered.
        """
        return self.attributor_class(model, self.composite, **self.attributor_kwargs)


def channel_bounds(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel min and max of ``inputs`` (dim 1), shaped to broadcast: (1, C, 1, ...).

    Parameters
    ----------
    inputs : torch.Tensor
        Samples, shape (N, C, ...).

    Returns
    -------
    tuple of torch.Tensor
        ``(low, high)``.
    """
    dims = [0] + list(range(2, inputs.ndim))
    return inputs.amin(dim=dims, keepdim=True), inputs.amax(dim=dims, keepdim=True)


def _inferred_bounds(model: nn.Module, inputs: Union[torch.Tensor, tuple], low: Bound, high: Bound) -> tuple:
    """Box bounds from the samples: see :func:`build_explainer`."""
    if isinstance(inputs, tuple):
        values = torch.cat([part.detach().flatten() for part in inputs if part.is_floating_point()])
        return values.amin(), values.amax()
    return _token_bounds(model, low, high) if is_token_ids(inputs) else channel_bounds(inputs)


def _as_bound(value: Bound, inferred: torch.Tensor, what: str) -> torch.Tensor:
    if value is None:
        bound = inferred
    else:
        bound = torch.as_tensor(value, dtype=torch.float32, device=inferred.device)
        if bound.ndim == 1 and inferred.ndim > 1 and bound.numel() == inferred.shape[1]:
            bound = bound.reshape(inferred.shape)
    if not torch.isfinite(bound).all():
        raise ValueError(f"{what} bound for the box rule must be finite, got {bound.flatten().tolist()}")
    return bound


def _token_bounds(model: nn.Module, low: Bound, high: Bound) -> tuple[torch.Tensor, torch.Tensor]:
    """Box bounds for a model fed token ids: none are needed unless a convolution could take the box rule.

    Token ids enter through an embedding, so the box rule (first convolution) has no input range to
    infer; a model without convolutions never uses it (placeholder zeros), one with convolutions
    needs the user's ``low`` and ``high``.
    """
    if any(isinstance(module, Convolution) for module in model.modules()) and (low is None or high is None):
        raise ValueError(
            "the box rule's bounds cannot be inferred from token ids and this model has convolutions; "
            "give low=... and high=... (the value range of the first convolution's input)"
        )
    zero = torch.zeros(())
    return zero, zero


def build_explainer(
    name: str,
    spec: ExplainerSpec,
    model: nn.Module,
    inputs: Union[torch.Tensor, tuple],
    low: Bound = None,
    high: Bound = None,
    canonizers: CanonizerArg = "auto",
) -> Explainer:
    """Turn one parsed specification into an :class:`Explainer` for ``model``.

    Composites built by name get ``canonizers`` (``"auto"``: chosen for ``model`` by the registry of
    :mod:`lrp_lightning.auto_canonizers`, the one every composite uses) and, if their
    constructor takes ``low``/``high``, the user's bounds or the per-channel min/max of ``inputs``
    (for token ids, which enter through an embedding, no bounds are inferred: see
    :func:`_token_bounds`; for several inputs the min/max over all their floating-point values, as
    scalars that fit whichever input the first layer takes).
    Attributors built by name get a fixed seed where they take one.

    Parameters
    ----------
    name : str
        Display name.
    spec : str or Composite
        A registry name or a Composite instance (used as given).
    model : torch.nn.Module
        The explained model.
    inputs : torch.Tensor or tuple of torch.Tensor
        The samples, on the device the attribution runs on (a tuple for several inputs).
    low, high : float, sequence of float, tensor, optional
        Box-rule bounds; inferred from ``inputs`` when None.
    canonizers : "auto", None or list of Canonizer
        Canonizers for composites built by name.

    Returns
    -------
    Explainer
        Ready to produce attributors.

    Raises
    ------
    ValueError
        If a box bound is not finite or ``low > high`` somewhere.
    """
    if isinstance(spec, Composite):
        explainer = Explainer(name, spec)
    elif spec in COMPOSITES:
        cls = COMPOSITES[spec]
        kwargs: dict = {"canonizers": resolve_canonizers(canonizers, model)}
        if {"low", "high"} <= set(inspect.signature(cls).parameters):
            inferred_low, inferred_high = _inferred_bounds(model, inputs, low, high)
            kwargs["low"] = _as_bound(low, inferred_low, "low")
            kwargs["high"] = _as_bound(high, inferred_high, "high")
            if (kwargs["low"] > kwargs["high"]).any():
                raise ValueError("low must not exceed high for the box rule")
        composite = cls(**kwargs)
        # the callback names uncovered layers once itself; a composite it built need not repeat it every epoch
        composite.warn_uncovered = False
        explainer = Explainer(name, composite)
    else:
        cls = ATTRIBUTORS[spec]
        parameters = inspect.signature(cls).parameters
        kwargs = {key: value for key, value in ATTRIBUTOR_DEFAULTS.items() if key in parameters}
        explainer = Explainer(name, None, cls, kwargs)
    return explainer
