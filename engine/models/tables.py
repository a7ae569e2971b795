"""Index and matrix tables that the networks build once per feature-map size and keep (``functools.lru_cache``).

Eager runs reuse the cached table. Under ``torch.compile``, Dynamo does not trace through the cache: it calls the
wrapped function and warns once per call site ("Dynamo detected a call to a `functools.lru_cache`-wrapped
function"), a warning a user of ``--compile`` would read on stderr for nothing. :func:`cached_table` calls the plain
function while compiling (the table becomes a constant of the compiled graph, built once at compile time) and the
cache otherwise: the same values either way, since the tables depend on their integer arguments only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def cached_table(table: Callable[..., T], *args: Any) -> T:
    """``table(*args)`` of an ``lru_cache``-wrapped ``table``: from the cache eagerly, the plain body when compiling."""
    if torch.compiler.is_compiling():
        return table.__wrapped__(*args)  # type: ignore[attr-defined]
    return table(*args)
