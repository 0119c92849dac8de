"""One call per node, nodes in parallel: a set spans nodes, and one slow node must not serialise the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_R = TypeVar("_R")
_T = TypeVar("_T")

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


def all_or_first_failure(
    items: Iterable[_T],
    fn: Callable[[_T], _R],
    *,
    workers: int,
    thread_name: str,
    consequences: tuple[type[BaseException], ...] = (),
) -> list[_R]:
    """fn(item) for every item, up to `workers` at a time; results in the items' order. When calls
    fail, the one raised is the first failure that is not one of `consequences` (the cancellations
    a failure causes in the calls beside it), else the first failure."""
    todo = list(items)
    if workers <= 1:
        return [fn(x) for x in todo]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name) as pool:
        futures = [pool.submit(fn, x) for x in todo]
        errors = [f.exception() for f in futures]
    failures = [e for e in errors if e is not None]
    cause = next((e for e in failures if not isinstance(e, consequences)), None)
    if failures:
        raise cause or failures[0]
    return [f.result() for f in futures]
