"""The rule map (which rule every layer got) as a table: rows for loggers with tables, Markdown for text logs."""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import nn

from lrp_lightning.callbacks.tables import Table

ROOT_NAME = "(model)"
RULE_MAP_COLUMNS = ("layer", "type", "rule")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _layer_type(model: nn.Module, name: str) -> str:
    try:
        return type(model.get_submodule(name)).__name__
    except AttributeError:
        return "?"


def rule_map_rows(model: nn.Module, rule_map: Mapping[str, object]) -> list[tuple[str, str, str]]:
    """One ``(layer, type, rule)`` row per hooked layer, in the order of ``rule_map``.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model (for the layer types).
    rule_map : mapping of str to rule
        Module name to rule instance, as ``Composite.rule_map`` holds it while registered.

    Returns
    -------
    list of tuple of str
    """
    return [(name or ROOT_NAME, _layer_type(model, name), repr(rule)) for name, rule in rule_map.items()]


def rule_map_markdown(
    explainer: str,
    model: nn.Module,
    rule_map: Mapping[str, object],
    uncovered: Sequence[str],
    canonizers: Sequence[object],
) -> str:
    """A Markdown description of the rules a composite attached.

    Parameters
    ----------
    explainer : str
        Display name of the composite.
    model : torch.nn.Module
        The explained model (for the layer types).
    rule_map : mapping of str to rule
        Module name to rule instance, as ``Composite.rule_map`` holds it while registered.
    uncovered : sequence of str
        Leaf modules with parameters that no rule covers.
    canonizers : sequence
        The composite's canonizers.

    Returns
    -------
    str
        A heading line, the canonizers, a ``| layer | type | rule |`` table and the uncovered layers.
    """
    names = ", ".join(type(canonizer).__name__ for canonizer in canonizers) or "none"
    lines = [f"**{explainer}** — canonizers: {names}", "", "| layer | type | rule |", "|---|---|---|"]
    for layer, layer_type, rule in rule_map_rows(model, rule_map):
        lines.append(f"| {_cell(layer)} | {layer_type} | {_cell(rule)} |")
    if uncovered:
        lines += ["", f"No rule (plain gradient): {', '.join(uncovered)}"]
    return "\n".join(lines)


def rule_map_table(
    explainer: str,
    model: nn.Module,
    rule_map: Mapping[str, object],
    uncovered: Sequence[str],
    canonizers: Sequence[object],
) -> Table:
    """The rule map as a :class:`~lrp_lightning.callbacks.tables.Table`: rows of :func:`rule_map_rows`,
    Markdown of :func:`rule_map_markdown` (same parameters).

    Returns
    -------
    Table
        Columns ``layer``, ``type``, ``rule``.
    """
    markdown = rule_map_markdown(explainer, model, rule_map, uncovered, canonizers)
    return Table.of(RULE_MAP_COLUMNS, rule_map_rows(model, rule_map), markdown)
