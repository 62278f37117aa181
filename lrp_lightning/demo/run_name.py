"""The TensorBoard run name of a demo configuration: one name per model, confounder and options.

``cnn_confounder`` for ``make demo``, ``vit_confounder`` for ``--model vit``, and every option that
differs from its default appended as ``,option=value`` (``cnn_confounder,val-watermark=mixed``), so
that two configurations never write into the same run and TensorBoard never mixes them. Options
that only say where or on what hardware to run are left out (:data:`NOT_IN_RUN_NAME`); an option
added to the demo's command line is part of the name without further code.
"""
from __future__ import annotations

import argparse
import re

# destinations that do not change what the run computes, or are already in the name's prefix
NOT_IN_RUN_NAME = frozenset({"model", "confounder", "log_dir", "name", "accelerator", "devices", "logger"})
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.+=,-]")


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_shown(item) for item in value)
    return str(value)


def run_name(args: argparse.Namespace, defaults: argparse.Namespace) -> str:
    """``<model>_<confounder|no_confounder>`` followed by ``,option=value`` for every changed option.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.
    defaults : argparse.Namespace
        The same parser's values without options for the same model (its per-model defaults filled in).

    Returns
    -------
    str
        A name safe as a directory name (characters outside ``A-Za-z0-9_.+=,-`` become ``-``).
    """
    name = f"{args.model}_{'confounder' if args.confounder else 'no_confounder'}"
    for option, value in vars(args).items():
        if option not in NOT_IN_RUN_NAME and value != getattr(defaults, option, None):
            name += f",{option.replace('_', '-')}={_shown(value)}"
    return UNSAFE_CHARACTERS.sub("-", name)
