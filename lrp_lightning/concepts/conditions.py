"""Conditions of a conditional attribution: parsing, checking and pairing them with the samples.

A condition is a dict ``{"y": [classes], "<layer name>": [concept ids], ...}``: the relevance starts at
the model output on ``classes`` (their logits, summed when there are several) and is masked, at each
named layer's output (or, for ``"<layer name>:input"``, its first input), to the given concepts.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Sequence

import torch

OUTPUT_NAME = "y"
INPUT_SUFFIX = ":input"


def module_name(layer: str) -> str:
    """The module a layer key names: ``"<module>"`` is the module's output, ``"<module>:input"`` its first input
    (e.g. the concatenated heads entering an attention's output projection)."""
    return layer[: -len(INPUT_SUFFIX)] if layer.endswith(INPUT_SUFFIX) else layer


def _ids(key: str, value: Any) -> list:
    values = [value] if isinstance(value, int) or (isinstance(value, torch.Tensor) and value.dim() == 0) else value
    try:
        ids = [int(item) for item in values]
    except (TypeError, ValueError):
        raise TypeError(f"condition {key!r} must be a list of integer indices, got {value!r}") from None
    if not ids:
        raise ValueError(f"condition {key!r} is empty; give at least one index or leave the key out")
    return ids


def parse(conditions: Any, layer_names: Iterable[str], output_required: bool = True) -> list:
    """Check ``conditions`` and return them as a list of ``{key: [int, ...]}`` dicts (key order kept).

    Parameters
    ----------
    conditions : dict or sequence of dict
        One condition or several.
    layer_names : iterable of str
        The model's module names (``model.named_modules()``).
    output_required : bool
        Every condition must name its classes ``"y"`` (False where the pass begins elsewhere: with a
        ``start_layer`` or an ``init_rel``).

    Raises
    ------
    TypeError
        If a condition is not a dict of index lists.
    ValueError
        If a condition has no ``"y"`` (and ``output_required``) or names a layer the model does not have (the message lists the
        closest names).
    """
    if isinstance(conditions, dict):
        conditions = [conditions]
    if not isinstance(conditions, Sequence) or not conditions:
        raise TypeError(f"conditions must be a non-empty list of dicts like [{{'y': [0], 'layer': [3]}}], got {conditions!r}")
    known = set(layer_names)
    parsed = []
    for condition in conditions:
        if not isinstance(condition, dict):
            raise TypeError(f"each condition must be a dict like {{'y': [0], 'layer': [3]}}, got {condition!r}")
        if output_required and OUTPUT_NAME not in condition:
            raise ValueError(
                f"condition {condition!r} has no {OUTPUT_NAME!r}: name the explained output classes, e.g. "
                f"{{{OUTPUT_NAME!r}: [0], ...}}, or begin the pass elsewhere with start_layer= or init_rel="
            )
        for key in condition:
            if key != OUTPUT_NAME and module_name(str(key)) not in known:
                close = difflib.get_close_matches(module_name(str(key)), sorted(known), n=8, cutoff=0.5)
                raise ValueError(
                    f"the model has no layer {key!r}; condition on one of its module names"
                    + (f", e.g. {', '.join(map(repr, close))}" if close else " (see model.named_modules())")
                )
        parsed.append({key: _ids(key, value) for key, value in condition.items()})
    return parsed


def pairing(samples: int, conditions: int) -> tuple:
    """Which sample and which condition each row of the batched pass explains.

    As zennit-crp: ``N`` samples and ``N`` conditions pair up (row ``i``: sample ``i``, condition
    ``i``); otherwise every sample meets every condition, sample-major (row ``i * C + j``: sample
    ``i``, condition ``j``), so one sample with ``C`` conditions gives ``C`` rows.

    Parameters
    ----------
    samples, conditions : int
        ``N`` and ``C``.

    Returns
    -------
    sample_index : torch.Tensor
        ``(rows,)`` long.
    condition_index : list of int
        ``rows`` entries.
    """
    if samples == conditions:
        return torch.arange(samples), list(range(conditions))
    rows = torch.arange(samples * conditions)
    return rows // conditions, [int(row) % conditions for row in rows]
