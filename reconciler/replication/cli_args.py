"""The arguments of `reconciler sync` (the command itself is in replication/cli.py, imported only
when it runs: gRPC and the generated code cost more start-up time than every other command)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

ControlOpts = Callable[[argparse.ArgumentParser], None]


def _cmd_sync(ns: argparse.Namespace) -> int:
    from .cli import cmd_sync

    return cmd_sync(ns)


def add_parser(sub: Any, control_opts: ControlOpts) -> None:
    sp = sub.add_parser(
        "sync",
        help="send a snapshot set to an offsite target now, or bring one back (--back)",
        description=(
            "reconciler sync SET_ID --target T [--wait] [--now]: queue a set for a target by hand.\n"
            "reconciler sync --back SET_ID --target T [--to NODE]: copy a set the target holds back to its "
            "origin node (or NODE), held there (--keep, default 7d) so it can be restored."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    control_opts(sp)
    sp.add_argument("set_id", help="the snapshot set")
    sp.add_argument("--target", required=True, help="offsite target name (offsite.targets in the config)")
    sp.add_argument("--wait", action="store_true", help="wait until it is there, with a progress bar")
    sp.add_argument("--now", action="store_true", help="send even outside the target's sync windows")
    sp.add_argument("--back", action="store_true", help="copy the set from the target back to a node")
    sp.add_argument("--to", help="with --back: the node to copy it to (default: where it came from)")
    sp.add_argument("--keep", default="7d", help="with --back: hold it there this long (default 7d)")
    sp.set_defaults(func=_cmd_sync)
