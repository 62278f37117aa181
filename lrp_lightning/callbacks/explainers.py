"""What the callback explains with: registry names and composites turned into attributors.

The user's ``composite`` argument — a registry name (an LRP composite such as
``"epsilon_gamma_box"`` or an attributor such as ``"smoothgrad"``), a
:class:`~lrp_lightning.core.Composite` instance, a list of these, or a dict from display name to
one of these — is checked at construction by :func:`parse_explainers` and turned into
:class:`~lrp_lightning.explainers.Explainer` objects at fit start by
:func:`~lrp_lightning.explainers.build_explainer` (the engine's, shared with the metrics that re-explain), once
the model and the samples are known (EpsilonGammaBox's bounds come from the samples, ``canonizers="auto"`` from
the model).
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

from lrp_lightning.auto_canonizers import CanonizerArg, check_canonizers  # noqa: F401 (their old path)
from lrp_lightning.callbacks.naming import check_tag_component, snake_case
from lrp_lightning.composites import COMPOSITES
from lrp_lightning.core import Composite
from lrp_lightning.explainers import (  # noqa: F401 (the callbacks' names for the engine's explainers)
    ATTRIBUTOR_DEFAULTS,
    Bound,
    Explainer,
    ExplainerSpec,
    build_explainer,
    channel_bounds,
    check_spec,
    known_names,
)

CompositeArg = Union[ExplainerSpec, Sequence[ExplainerSpec], Mapping[str, ExplainerSpec]]


def _default_name(spec: ExplainerSpec) -> str:
    if isinstance(spec, str):
        return spec
    registered = [name for name, cls in COMPOSITES.items() if type(spec) is cls]
    return registered[0] if registered else snake_case(type(spec).__name__)


def parse_explainers(composite: CompositeArg) -> list[tuple[str, ExplainerSpec]]:
    """Check the user's ``composite`` argument and name each entry.

    Parameters
    ----------
    composite : str, Composite, list of them, or dict of name to them
        What to explain with.

    Returns
    -------
    list of (str, str or Composite)
        Unique display names (``"name_2"`` for repeats) and their specifications.

    Raises
    ------
    KeyError
        For an unknown registry name; the message lists the known ones.
    TypeError
        For an entry that is neither a name nor a Composite.
    ValueError
        For an empty list or dict, or a display name that is not a valid tag component.
    """
    if isinstance(composite, Mapping):
        entries = [(str(name), spec) for name, spec in composite.items()]
    elif isinstance(composite, (str, Composite)):
        entries = [(None, composite)]
    elif isinstance(composite, (list, tuple)):
        entries = [(None, spec) for spec in composite]
    else:
        raise TypeError(
            f"composite must be a registry name, a Composite, or a list or dict of them, got {type(composite).__name__}"
        )
    if not entries:
        raise ValueError("composite must name at least one composite or attributor")
    named: list = []
    for name, spec in entries:
        check_spec(spec)
        base = check_tag_component(name if name is not None else _default_name(spec), "explainer")
        unique, count = base, 1
        while unique in [existing for existing, _ in named]:
            count += 1
            unique = f"{base}_{count}"
        named.append((unique, spec))
    return named


