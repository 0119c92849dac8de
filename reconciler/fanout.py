"""One call per node, nodes in parallel: a set spans nodes, and one slow node must not serialise the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_R = TypeVar("_R")

MAX_PARALLEL_NODES = 16


def per_node(nodes: Iterable[str], fn: Callable[[str], _R], *, thread_name: str = "fanout") -> list[_R]:
    """fn(node) for every node, in parallel when there are several; results in the nodes' order.
    An exception from any call is raised once all calls have been submitted."""
    names = list(nodes)
    if len(names) <= 1:
        return [fn(n) for n in names]
    with ThreadPoolExecutor(
        max_workers=min(MAX_PARALLEL_NODES, len(names)), thread_name_prefix=thread_name
    ) as pool:
        futures = [pool.submit(fn, n) for n in names]
        return [f.result() for f in futures]
