"""Small helpers shared by every layer (envs is the bottom of the dependency graph)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Registered names closest to `name`, case-insensitively (best first)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> ValueError:
    """A ValueError naming the unknown `name`, its closest matches and where to look.

    Example: ``unknown environment id 'CartPole-v2'; closest: 'CartPole-v1'``.
    """
    choices = sorted(choices)
    hits = close_matches(name, choices)
    if hits:
        hint = "closest: " + ", ".join(repr(h) for h in hits)
    else:
        shown = ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else "")
        hint = f"allowed: {shown}"
    return ValueError(f"unknown {kind} {name!r}; {hint}")
