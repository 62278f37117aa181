"""Names that end up in log tags: default names from class names, and their validation."""
from __future__ import annotations

import re


def snake_case(name: str) -> str:
    """``"EpsilonPlusFlat"`` -> ``"epsilon_plus_flat"``.

    Parameters
    ----------
    name : str
        A CamelCase class name.

    Returns
    -------
    str
    """
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def check_tag_component(name: str, what: str) -> str:
    """Return ``name`` if it can be one component of a ``/``-separated log tag.

    Parameters
    ----------
    name : str
        The candidate.
    what : str
        What it names, for the error message.

    Returns
    -------
    str
        ``name``.

    Raises
    ------
    ValueError
        If ``name`` is empty or contains ``/``.
    """
    if not name or "/" in name:
        raise ValueError(f"{what} name {name!r} must be non-empty and contain no '/'")
    return name
