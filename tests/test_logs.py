"""Structured logs: with RECONCILER_LOG_FORMAT=json the daemon writes JSON lines to stderr, and
every action line (create, delete; done, failed or refused) carries scope, set_id, node and reason."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
from pathlib import Path
from typing import Any

from reconciler.logs import LogOnce
from tests.helpers import RECONCILER, cli, cli_json, env_for, wait_for, write

CONFIG = """\
version: 1
nodes:
  local:
    embedded: true
    pools:
      main: {type: chunkstore, path: ./pool, create: true}
resources:
  vm1:
    kind: vm
    volumes: [vms/vm1]
profiles:
  minutely:
    periods:
      - {name: every-minute, frequency: interval, every: 1m, retention: 10m}
system_snapshots:
  full: {type: full, profile: minutely}
"""

ACTION_FIELDS = ("scope", "set_id", "node", "reason")


def test_json_logs_carry_scope_set_node_and_reason(tmp_path: Path) -> None:
    write(tmp_path / "pool" / "vms" / "vm1" / "disk.img", "x" * 4096)
    cfg = write(tmp_path / "config.yaml", CONFIG)
    state = tmp_path / "state"
    env = env_for(state) | {"RECONCILER_LOG_FORMAT": "json", "RECONCILER_LOG_LEVEL": "info"}
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [*RECONCILER, "daemon", "-c", str(cfg)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=tmp_path,
        )
        try:
            wait_for(
                lambda: (state / "control.sock").exists() or proc.poll() is not None, what="control socket"
            )
            assert proc.poll() is None, err_path.read_text()
            wait_for(lambda: cli_json(state, "snapshot", "list"), what="the scheduled set")
            manual = cli_json(
                state,
                "snapshot",
                "create",
                "resource:vm1",
                "--expires",
                "1h",
                "--description",
                "before upgrade",
            )
            locked = cli_json(state, "snapshot", "create", "resource:vm1", "--never-expire", "--immutable")
            assert cli(state, "snapshot", "delete", manual["set_id"]).returncode == 0
            assert cli(state, "snapshot", "delete", locked["set_id"]).returncode == 5  # refused: immutable
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == b""  # logs go to stderr only

    lines = [line for line in err_path.read_text().splitlines() if line.strip()]
    assert lines
    records: list[dict[str, Any]] = []
    for line in lines:
        rec = json.loads(line)  # every line is one JSON object
        assert isinstance(rec, dict)
        assert {"time", "level", "logger", "message"} <= rec.keys(), rec
        records.append(rec)

    actions = [r for r in records if r.get("action") in ("create", "delete")]
    for r in actions:
        missing = [f for f in ACTION_FIELDS if not r.get(f)]
        assert not missing, f"action line without {missing}: {r}"
        assert r["node"] == "local"
    # the lines mentioning a set action in their text are exactly the structured ones
    worded = [
        r
        for r in records
        if r["message"].startswith(("created set", "deleted set", "create of set", "delete of set"))
    ]
    assert worded == [r for r in actions if r in worded] and len(worded) == len(actions)

    def one(action: str, set_id: str, level: str) -> dict[str, Any]:
        found = [
            r for r in actions if r["action"] == action and r["set_id"] == set_id and r["level"] == level
        ]
        assert len(found) == 1, (action, set_id, level, actions)
        return found[0]

    scheduled = [r for r in actions if r["action"] == "create" and r["scope"] == "system:full"]
    assert scheduled and all(r["level"] == "info" for r in scheduled)
    created = one("create", manual["set_id"], "info")
    assert created["scope"] == "resource:vm1" and created["reason"] == "before upgrade"
    deleted = one("delete", manual["set_id"], "info")
    assert deleted["scope"] == "resource:vm1" and deleted["reason"] == "deleted by the operator"
    refused = one("delete", locked["set_id"], "warning")
    assert "immutable" in refused["message"] and refused["reason"] == "deleted by the operator"


def test_planner_warnings_are_logged_when_they_appear_and_shown_by_status(tmp_path: Path) -> None:
    """A planner warning (here: a partial system scope whose tags match nothing) shows in `status`
    for as long as it holds, and the daemon logs it once when it appears, not on every pass; after
    the config is fixed it goes, and when it comes back it is logged again."""
    write(tmp_path / "pool" / "vms" / "vm1" / "disk.img", "x" * 4096)
    untagged = CONFIG + "  web: {type: partial, include_tags: [web], profile: minutely}\n"
    tagged = untagged.replace("volumes: [vms/vm1]\n", "volumes: [vms/vm1]\n    tags: [web]\n")
    cfg = write(tmp_path / "config.yaml", untagged)
    state = tmp_path / "state"
    env = env_for(state) | {"RECONCILER_LOG_FORMAT": "json", "RECONCILER_LOG_LEVEL": "info"}
    err_path = tmp_path / "stderr.log"
    warning = "system:web: profile minutely has no members to snapshot; nothing is created"

    def logged() -> list[dict[str, Any]]:
        recs = [json.loads(line) for line in err_path.read_text().splitlines() if line.strip()]
        return [r for r in recs if warning in r["message"]]

    def another_pass() -> None:  # a reload wakes the daemon for a pass
        last = cli_json(state, "status")["last_pass"]
        assert cli(state, "reload").returncode == 0
        wait_for(lambda: cli_json(state, "status")["last_pass"] != last, what="another pass")

    with open(err_path, "wb") as err:
        proc = subprocess.Popen([*RECONCILER, "daemon", "-c", str(cfg)], env=env, stderr=err, cwd=tmp_path)
        try:
            wait_for(
                lambda: (state / "control.sock").exists() or proc.poll() is not None, what="control socket"
            )
            assert proc.poll() is None, err_path.read_text()
            wait_for(lambda: cli_json(state, "status").get("last_pass"), what="the first pass")
            for _ in range(3):
                another_pass()
            st = cli_json(state, "status")
            assert st["warnings"] == [warning], st
            human = cli(state, "status", check=True).stdout
            assert f"warning: {warning}" in human, human
            (rec,) = logged()  # three passes and more, one line
            assert rec["level"] == "warning" and rec["message"] == f"plan: {warning}"

            write(cfg, tagged)
            another_pass()
            st = cli_json(state, "status")
            assert not st.get("warnings"), st["warnings"]
            assert "warning:" not in cli(state, "status", check=True).stdout

            write(cfg, untagged)
            assert cli(state, "reload").returncode == 0
            wait_for(lambda: len(logged()) == 2, what="the warning logged again")
            assert cli_json(state, "status")["warnings"] == [warning]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_log_once_logs_a_message_when_it_appears() -> None:
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.levelname} {record.getMessage()}")

    logger = logging.getLogger("tests.log_once")
    logger.addHandler(Catch())
    logger.propagate = False
    once = LogOnce(logger, "plan: ")
    assert once.update(["a", "b", "a"]) == ["a", "b"]
    assert once.update(["b", "a"]) == []
    assert once.update(["b"]) == []
    assert once.update(["a", "b"]) == ["a"]  # back after going away: logged again
    assert once.update([]) == []
    assert seen == ["WARNING plan: a", "WARNING plan: b", "WARNING plan: a"]
