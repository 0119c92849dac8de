"""Freeze and thaw hooks, run by the agent as real subprocesses around a snapshot.

Thaw always runs for every resource whose freeze was attempted, even when the snapshot fails,
and as soon as the snapshot is cut. Each hook has a timeout; a hung hook is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .domain import Hooks
from .errors import QuiesceFailed

log = logging.getLogger(__name__)


@dataclass
class QuiesceOutcome:
    quiesced: bool = True
    warnings: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)  # resources whose freeze succeeded
    thaw_errors: list[str] = field(default_factory=list)


def run_hook(argv: Sequence[str], *, timeout: float, what: str) -> None:
    """Run one hook; raise QuiesceFailed naming the hook on non-zero exit, timeout or missing binary."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a timeout kills the hook's children too
        )
    except OSError as exc:
        raise QuiesceFailed(f"{what}: cannot run {argv[0]!r}: {exc.strerror}") from None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise QuiesceFailed(
            f"{what}: {argv[0]!r} did not finish within {timeout:g}s and was killed"
        ) from None
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        detail = f": {' | '.join(tail)}" if tail else ""
        raise QuiesceFailed(f"{what}: {argv[0]!r} exited with status {proc.returncode}{detail}")


@contextmanager
def quiesced(
    groups: Sequence[tuple[str, Hooks]], *, fail_on_error: bool, freeze_budget: float
) -> Iterator[QuiesceOutcome]:
    """Freeze every group, yield while frozen, then thaw in reverse order — always.

    With fail_on_error, a failed freeze thaws what was frozen and raises QuiesceFailed;
    otherwise the snapshot goes on crash-consistent and the outcome says quiesced=False.
    """
    outcome = QuiesceOutcome(quiesced=bool(groups))
    attempted: list[tuple[str, Hooks]] = []
    started = time.monotonic()
    try:
        for resource, hooks in groups:
            if not hooks.freeze:
                continue
            attempted.append((resource, hooks))
            remaining = freeze_budget - (time.monotonic() - started)
            timeout = min(hooks.timeout.total_seconds(), max(remaining, 0.1))
            try:
                run_hook(hooks.freeze, timeout=timeout, what=f"freeze of {resource}")
                outcome.frozen.append(resource)
            except QuiesceFailed as exc:
                if fail_on_error:
                    raise
                outcome.quiesced = False
                outcome.warnings.append(f"{exc}; snapshot taken crash-consistent")
        yield outcome
    finally:
        for resource, hooks in reversed(attempted):
            if not hooks.thaw:
                continue
            try:
                run_hook(hooks.thaw, timeout=hooks.timeout.total_seconds(), what=f"thaw of {resource}")
            except QuiesceFailed as exc:
                log.error("%s", exc)
                outcome.thaw_errors.append(str(exc))
                outcome.warnings.append(str(exc))
        held = time.monotonic() - started
        if attempted and held > freeze_budget:
            outcome.warnings.append(
                f"guests stayed frozen {held:.1f}s, over the freeze budget of {freeze_budget:g}s"
            )
