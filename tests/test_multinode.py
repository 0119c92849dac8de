"""Many nodes: the daemon against real agent processes over real TCP sockets.

System snapshots spanning agents, partial scopes, per-resource profiles; agents that die, hang,
lie about their name, speak an old protocol or answer garbage; an agent killed mid-snapshot;
hooks that hang; a volume that disappeared; observation that stays cheap when nothing changed.

Most tests run the daemon in-process with an injected clock (real agents, real gRPC, the real CLI
against its control socket) so that slots, expiry and backoff are under the test's control; the
first one runs the daemon as a real process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from reconciler.agent.client import AgentClient, Deadlines
from reconciler.backends import make_backend
from reconciler.control.client import ControlClient
from reconciler.daemon import Daemon
from reconciler.settings import DaemonSettings
from reconciler.v1 import agent_pb2 as pb
from reconciler.v1 import agent_pb2_grpc as pb_grpc
from tests.helpers import AgentProcess, DaemonProcess, cli, cli_json, wait_for, write

T0 = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
# short deadlines so that a hung agent costs a test seconds, not the production 5 s / 20 s
FAST = Deadlines(info=1.5, call=5.0, keepalive=1.0)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Cluster:
    """One agent process per node, each serving a chunkstore pool, and the `nodes:` section of a
    daemon config that names them. Fake peers (not agents) can be listed by address."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.agents: dict[str, AgentProcess] = {}
        self.pools: dict[str, dict[str, Path]] = {}
        self.extra: dict[str, str] = {}  # node -> address of something that is not a real agent
        self.agent_names: dict[str, str] = {}

    def add(
        self, node: str, volumes: list[str], *, pools: tuple[str, ...] = ("main",), agent_node: str = ""
    ) -> None:
        d = self.base / node
        self.pools[node] = {}
        for pool in pools:
            root = d / pool
            self.pools[node][pool] = root
            for v in volumes:
                pv, vol = v.split(":", 1) if ":" in v else (pools[0], v)
                if pv == pool:
                    write(root / vol / "data.bin", f"{node}/{pool}/{vol}\n" * 100)
        self.agent_names[node] = agent_node or node
        self._write_agent_yaml(node, "127.0.0.1:0")

    def _write_agent_yaml(self, node: str, listen: str) -> Path:
        pools = "".join(
            f"  {p}: {{type: chunkstore, path: {root}, create: true}}\n"
            for p, root in self.pools[node].items()
        )
        return write(
            self.base / node / "agent.yaml",
            f'node: {self.agent_names[node]}\nlisten: "{listen}"\ninsecure: true\nallow_hooks: true\npools:\n{pools}',
        )

    def start(self) -> None:
        procs = {n: AgentProcess(self.base / n / "agent.yaml") for n in self.pools if n not in self.agents}
        with futures.ThreadPoolExecutor(len(procs) or 1) as ex:
            list(ex.map(lambda p: p.start(), procs.values()))
        self.agents.update(procs)

    def restart(self, node: str) -> AgentProcess:
        """Start the node's agent again on the port it had (the daemon's config names that port)."""
        old = self.agents[node]
        assert old.proc is not None and old.proc.poll() is not None, "stop or kill it first"
        old.stop()
        self._write_agent_yaml(node, f"127.0.0.1:{old.port}")
        new = AgentProcess(self.base / node / "agent.yaml").start()
        assert new.port == old.port
        self.agents[node] = new
        return new

    def address(self, node: str) -> str:
        return self.extra.get(node) or f"127.0.0.1:{self.agents[node].port}"

    def nodes_yaml(self) -> str:
        out = ["nodes:"]
        for node in sorted({*self.pools, *self.extra}):
            out.append(f'  {node}:\n    address: "{self.address(node)}"\n    insecure: true\n    pools:')
            for p, root in self.pools.get(node, {"main": self.base / node / "main"}).items():
                out.append(f"      {p}: {{type: chunkstore, path: {root}}}")
        return "\n".join(out) + "\n"

    def config(self, body: str) -> Path:
        return write(self.base / "config.yaml", "version: 1\n" + self.nodes_yaml() + body)

    def catalog_rows(self, node: str, set_id: str, pool: str = "main") -> list[tuple[str, str, str]]:
        db = sqlite3.connect(self.pools[node][pool] / ".reconciler" / "catalog.db")
        try:
            return db.execute(
                "SELECT set_id, volume, name FROM snapshots WHERE set_id=?", (set_id,)
            ).fetchall()
        finally:
            db.close()

    def stop(self) -> None:
        for a in self.agents.values():
            if a.proc is not None and a.proc.poll() is None:
                os.kill(a.proc.pid, signal.SIGCONT)  # a stopped agent cannot act on SIGTERM
            a.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@contextmanager
def daemon_in_process(cfg: Path, state: Path, clock: Clock, deadlines: Deadlines = FAST) -> Iterator[Daemon]:
    """The real Daemon with its control socket (the CLI works against it), passes run by the test."""
    d = Daemon(cfg, DaemonSettings(state_dir=state), clock=clock, deadlines=deadlines)
    d.start()
    try:
        yield d
    finally:
        d.stop()
        d._shutdown()


def sets_of(d: Daemon, scope: str) -> list[Any]:
    return [s for s in d.list_sets() if s.scope == scope]


def node_status(state: Path) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in cli_json(state, "status")["nodes"]}


HOURLY = """\
profiles:
  hourly:
    periods:
      - {name: hourly, frequency: hourly, retention: 1h}
"""


# --- 1. a system snapshot spans the agents ------------------------------------------------------


def test_system_snapshots_span_three_agents_with_partial_scopes_and_resource_profiles(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.add("n1", ["vms/web1", "shares/docs"])
    cluster.add("n2", ["vms/db1/disk0", "vms/db1/disk1"])
    cluster.add("n3", ["vms/web2"])
    cluster.start()
    cfg = cluster.config(
        """\
resources:
  web1: {kind: vm, node: n1, volumes: [vms/web1], tags: [web]}
  docs: {kind: nas_volume, node: n1, volumes: [shares/docs], tags: [files]}
  db1: {kind: vm, node: n2, volumes: [vms/db1/disk0, vms/db1/disk1], tags: [db]}
  web2: {kind: vm, node: n3, volumes: [vms/web2], tags: [web], profile: vm}
profiles:
  hourly:
    periods:  # daily at a fixed hour: a run of this test never straddles two slots
      - {name: hourly, frequency: daily, hour: 3, retention: 2d}
  vm:
    periods:
      - {name: vm-hourly, frequency: daily, hour: 4, retention: 2d}
system_snapshots:
  full: {type: full, profile: hourly}
  web: {type: partial, include_tags: [web], profile: hourly}
  nodb: {type: partial, exclude_tags: [db], profile: hourly}
"""
    )
    state = tmp_path / "state"
    expected = {
        "system:full": {
            ("n1", "vms/web1"),
            ("n1", "shares/docs"),
            ("n2", "vms/db1/disk0"),
            ("n2", "vms/db1/disk1"),
            ("n3", "vms/web2"),
        },
        "system:web": {("n1", "vms/web1"), ("n3", "vms/web2")},
        "system:nodb": {("n1", "vms/web1"), ("n1", "shares/docs"), ("n3", "vms/web2")},
        "resource:web2": {("n3", "vms/web2")},
    }
    with DaemonProcess(cfg, state):
        control = ControlClient(state / "control.sock")
        try:
            wait_for(
                lambda: {s["scope"] for s in control.list_sets() if s["complete"]} >= set(expected),
                timeout=30,
                what="a complete set for every scope",
            )
        finally:
            control.close()
        listed = cli_json(state, "snapshot", "list")
        for scope, members in expected.items():
            [s] = [s for s in listed if s["scope"] == scope]  # one set per scope: one id across nodes
            assert s["complete"] and s["expected_members"] == len(members), s
            assert {(m["node"], m["volume"]) for m in s["members"]} == members, scope
            # every node holds its part under the same set id and the same name
            names = {
                row[2] for node in {n for n, _ in members} for row in cluster.catalog_rows(node, s["set_id"])
            }
            assert names == {s["name"]}
            assert sum(len(cluster.catalog_rows(n, s["set_id"])) for n in ("n1", "n2", "n3")) == len(members)
        [vm] = [s for s in listed if s["scope"] == "resource:web2"]
        assert vm["profile"] == "vm" and vm["period"] == "vm-hourly"
        # a manual system snapshot through the CLI: one request, all three nodes, one set
        manual = cli_json(state, "snapshot", "create", "system:full", "--expires", "1h", "--request-id", "m1")
        assert manual["complete"] and {m["node"] for m in manual["members"]} == {"n1", "n2", "n3"}
        assert len(manual["members"]) == 5
        assert (
            cli_json(state, "snapshot", "create", "system:full", "--expires", "1h", "--request-id", "m1")[
                "set_id"
            ]
            == manual["set_id"]
        )


# --- 2. an agent dies; the others carry on; it comes back -------------------------------------


def test_killed_agent_leaves_a_partial_set_that_is_never_good_and_is_completed_on_return(
    cluster: Cluster, tmp_path: Path
) -> None:
    for n in ("n1", "n2", "n3"):
        cluster.add(n, [f"vms/{n}"])
    cluster.start()
    resources = "".join(f"  r{n}: {{kind: vm, node: {n}, volumes: [vms/{n}]}}\n" for n in ("n1", "n2", "n3"))
    cfg = cluster.config(
        "resources:\n" + resources + HOURLY + "system_snapshots:\n  full: {type: full, profile: hourly}\n"
    )
    clock = Clock()
    state = tmp_path / "state"
    with daemon_in_process(cfg, state, clock) as d:
        d.run_pass()
        [s1] = sets_of(d, "system:full")
        assert s1.complete and len(s1.members) == 3
        # an hour later s1 is past its retention; n3 dies just before the next slot is taken
        clock.now = T0 + timedelta(hours=1, minutes=15)
        cluster.agents["n3"].kill()
        started = time.monotonic()
        result = d.run_pass()
        assert time.monotonic() - started < 10
        created = {r.node for r in result.records if r.kind == "create" and r.ok}
        assert created == {"n1", "n2"}  # the other nodes carry on
        s2 = next(s for s in sets_of(d, "system:full") if s.set_id != s1.set_id)
        assert len(s2.members) == 2 and s2.expected_members == 3 and not s2.complete

        nodes = node_status(state)
        assert nodes["n3"]["reachable"] is False and nodes["n1"]["reachable"] is True
        assert "n3" in nodes["n3"]["error"] and "unavailable" in nodes["n3"]["error"]
        listed = {s["set_id"]: s for s in cli_json(state, "snapshot", "list")}
        assert listed[s2.set_id]["complete"] is False and listed[s1.set_id]["complete"] is True
        plan = cli_json(state, "plan")
        assert not [a for a in plan["actions"] if a["kind"] == "delete"]
        kept = {k["set_id"]: k for k in plan["kept"]}
        # the expired s1 stays: the partial s2 is not a good copy
        assert kept[s1.set_id]["rule"] == "last_good", kept
        assert s2.set_id in kept  # within its retention; what matters is that it is not the last good copy
        assert any("n3" in w and "unreachable" in w for w in plan["warnings"])
        d.run_pass()  # passes while n3 is away change nothing
        assert {s.set_id for s in sets_of(d, "system:full")} == {s1.set_id, s2.set_id}

        # n3 comes back on the same port: the daemon completes s2 under the same id
        cluster.restart("n3")
        clock.advance(minutes=1)

        def caught_up() -> bool:
            d.run_pass()
            return any(s.set_id == s2.set_id and s.complete for s in sets_of(d, "system:full"))

        wait_for(caught_up, timeout=20, interval=0.3, what="the partial set completed")
        assert [row[0] for row in cluster.catalog_rows("n3", s2.set_id)] == [s2.set_id]
        d.run_pass()  # now s2 is the good copy and the expired s1 may go
        assert [s.set_id for s in sets_of(d, "system:full")] == [s2.set_id]
        deletes = [r for r in d.executor.records if r.kind == "delete" and r.set_id == s1.set_id]
        assert deletes and all(r.ok for r in deletes) and "expired" in deletes[0].reason


# --- 2b. an agent that accepts connections but never answers ----------------------------------


def test_hung_agent_costs_a_pass_its_deadline_not_forever(cluster: Cluster, tmp_path: Path) -> None:
    stop_flag = tmp_path / "stop-agent-during-freeze"
    cluster.add("n1", ["vms/a"])
    cluster.add("n2", ["vms/b"])
    cluster.start()
    # n2's freeze hook stops its own agent (SIGSTOP to the parent) when the flag file exists:
    # a hang in the middle of a long call, after the daemon saw the agent healthy
    freeze = f"if [ -f {stop_flag} ]; then rm {stop_flag}; kill -STOP $PPID; fi"
    cfg = cluster.config(
        f"""\
resources:
  a: {{kind: vm, node: n1, volumes: [vms/a]}}
  b:
    kind: vm
    node: n2
    volumes: [vms/b]
    quiesce: {{freeze: [sh, -c, "{freeze}"], thaw: [sh, -c, "true"], timeout: 60s}}
profiles:
  hourly:
    periods:
      - {{name: hourly, frequency: hourly, retention: 1d, quiesce: true}}
system_snapshots:
  full: {{type: full, profile: hourly, quiesce: true}}
"""
    )
    clock = Clock()
    state = tmp_path / "state"
    n2 = cluster.agents["n2"]
    assert n2.proc is not None
    with daemon_in_process(cfg, state, clock) as d:
        # (a) stopped before the pass: GetNodeInfo runs into its deadline, n1 still gets its part
        os.kill(n2.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        result = d.run_pass()
        took = time.monotonic() - started
        assert took < FAST.info + 5, took
        assert {r.node for r in result.records if r.ok} == {"n1"}
        obs = d.observer.nodes["n2"]
        # the call deadline or the keepalive ping, whichever fires first on a loaded machine: both
        # bound what a hung agent costs (checked by `took` above)
        assert not obs.reachable
        assert "deadline_exceeded" in obs.error or "ping timeout" in obs.error, obs.error
        os.kill(n2.proc.pid, signal.SIGCONT)
        clock.advance(minutes=1)
        wait_for(
            lambda: d.run_pass() and all(s.complete for s in sets_of(d, "system:full")),
            timeout=15,
            interval=0.2,
            what="n2 back and the set completed",
        )

        # (b) stopped in the middle of its CreateSnapshotSet: keepalive pings go unanswered
        clock.now = T0 + timedelta(hours=1)
        stop_flag.touch()
        started = time.monotonic()
        result = d.run_pass()
        took = time.monotonic() - started
        assert took < 4 * FAST.keepalive + 5, took
        failed = [r for r in result.records if not r.ok]
        assert [r.node for r in failed] == ["n2"] and failed[0].retryable, result.records
        assert "ping timeout" in failed[0].error or "unavailable" in failed[0].error
        assert {r.node for r in result.records if r.ok} == {"n1"}
        # the agent resumes and finishes what it was doing; the daemon sees one complete set
        os.kill(n2.proc.pid, signal.SIGCONT)
        clock.advance(minutes=5)  # past the retry backoff
        wait_for(
            lambda: (
                d.run_pass()
                and len(sets_of(d, "system:full")) == 2
                and all(s.complete for s in sets_of(d, "system:full"))
            ),
            timeout=15,
            interval=0.2,
            what="the interrupted set completed",
        )


# --- 3. peers that are not what the config says ------------------------------------------------


class OldAgent(pb_grpc.AgentServicer):  # type: ignore[misc]
    """A peer that answers GetNodeInfo like an agent of protocol version 2 (everything else:
    UNIMPLEMENTED, which the daemon must never get to)."""

    calls: list[str] = []

    def GetNodeInfo(self, request: pb.GetNodeInfoRequest, context: grpc.ServicerContext) -> pb.NodeInfo:
        self.calls.append("GetNodeInfo")
        return pb.NodeInfo(
            node=request.expect_node, protocol_version=cast(pb.ProtocolVersion, 2), agent_version="9.0.0"
        )


@contextmanager
def garbage_listener() -> Iterator[int]:
    """A TCP port that accepts connections and answers bytes that are not HTTP/2."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage \x17\x03\x03" * 20)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        done.set()
        t.join(5)
        srv.close()


def test_wrong_name_old_protocol_and_garbage_are_clear_errors_and_others_carry_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.add("n1", ["vms/a"])
    cluster.add("n2", ["vms/b"], agent_node="storage7")  # the agent thinks it is someone else
    cluster.start()
    old = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_AgentServicer_to_server(OldAgent(), old)
    old_port = old.add_insecure_port("127.0.0.1:0")
    old.start()
    with garbage_listener() as garbage_port:
        cluster.extra = {"n3": f"127.0.0.1:{old_port}", "n4": f"127.0.0.1:{garbage_port}"}
        resources = "".join(
            f"  r{i}: {{kind: vm, node: n{i}, volumes: [vms/{v}]}}\n"
            for i, v in ((1, "a"), (2, "b"), (3, "c"), (4, "d"))
        )
        cfg = cluster.config(
            "resources:\n" + resources + HOURLY + "system_snapshots:\n  full: {type: full, profile: hourly}\n"
        )
        state = tmp_path / "state"
        with daemon_in_process(cfg, state, Clock()) as d:
            result = d.run_pass()
            assert [r.node for r in result.records] == ["n1"] and result.records[0].ok
            nodes = node_status(state)
            assert nodes["n1"]["reachable"] is True
            assert not any(nodes[n]["reachable"] for n in ("n2", "n3", "n4"))
            for n in ("n2", "n3", "n4"):
                print(f"{n}: {nodes[n]['error']}")
            # both names, so the operator sees which side is wrong
            assert "'storage7'" in nodes["n2"]["error"] and "'n2'" in nodes["n2"]["error"], nodes["n2"]
            assert "protocol 2" in nodes["n3"]["error"] and "upgrade" in nodes["n3"]["error"], nodes["n3"]
            assert "n4" in nodes["n4"]["error"] and "unavailable" in nodes["n4"]["error"], nodes["n4"]
            [s] = sets_of(d, "system:full")
            assert len(s.members) == 1 and s.expected_members == 4 and not s.complete
            assert OldAgent.calls and set(OldAgent.calls) == {"GetNodeInfo"}  # nothing else was asked
            d.run_pass()  # and nothing crashes on the next pass either
    old.stop(0)


# --- 4. an agent killed mid-snapshot; hooks that hang; a volume that is gone ----------------------


def test_agent_killed_mid_snapshot_shows_nothing_partial_and_the_set_is_completed(
    cluster: Cluster, tmp_path: Path
) -> None:
    slow = tmp_path / "slow-thaw"
    thawing = tmp_path / "thawing"
    hook_pid = tmp_path / "hook.pid"
    cluster.add("n1", ["vms/a/disk0", "vms/a/disk1"])
    cluster.add("n2", ["vms/b"])
    cluster.start()
    # the thaw runs after both disks are stored and before they become visible (one catalog
    # transaction after the thaw): the agent dies there
    thaw = f"echo $$ > {hook_pid}; touch {thawing}; if [ -f {slow} ]; then exec sleep 60; fi"
    cfg = cluster.config(
        f"""\
resources:
  a:
    kind: vm
    node: n1
    volumes: [vms/a/disk0, vms/a/disk1]
    quiesce: {{freeze: [sh, -c, "true"], thaw: [sh, -c, "{thaw}"], timeout: 2m}}
  b: {{kind: vm, node: n2, volumes: [vms/b]}}
profiles:
  hourly:
    periods:
      - {{name: hourly, frequency: hourly, retention: 1d, quiesce: true}}
system_snapshots:
  full: {{type: full, profile: hourly, quiesce: true}}
"""
    )
    clock = Clock()
    state = tmp_path / "state"
    root = cluster.pools["n1"]["main"]
    slow.touch()
    with daemon_in_process(cfg, state, clock) as d:
        passes: list[Any] = []
        t = threading.Thread(target=lambda: passes.append(d.run_pass()))
        t.start()
        wait_for(lambda: thawing.exists() or passes, timeout=15, what="the thaw hook to start")
        assert not passes, passes[0].records  # the pass must still be waiting on n1
        stored = make_backend("chunkstore", pool="main", root=root).stored_keys()
        set_id = next(iter(stored))[0]
        assert stored == {(set_id, "vms/a/disk0"), (set_id, "vms/a/disk1")}  # data written, not visible
        cluster.agents["n1"].kill()
        t.join(30)
        assert not t.is_alive()
        os.kill(int(hook_pid.read_text()), signal.SIGKILL)  # the orphaned hook
        [res] = passes
        assert {(r.node, r.ok) for r in res.records} == {("n1", False), ("n2", True)}
        assert cluster.catalog_rows("n1", set_id) == []

        slow.unlink()
        cluster.restart("n1")
        # opening the pool again removed what the catalog does not list; nothing half-made remains
        assert make_backend("chunkstore", pool="main", root=root).stored_keys() == set()
        staging = root / ".reconciler" / "staging"
        assert not staging.exists() or not list(staging.iterdir())
        clock.advance(minutes=1)

        def completed() -> bool:
            d.run_pass()
            return any(s.complete for s in sets_of(d, "system:full"))

        wait_for(completed, timeout=20, interval=0.3, what="the set completed after the restart")
        [s] = sets_of(d, "system:full")  # the same set id, no second set for the slot
        assert s.set_id == set_id and len(s.members) == 3
        assert all(m.snapshot.quiesced for m in s.members if m.node == "n1")  # froze and thawed this time


def test_hook_past_its_timeout_is_killed_thaw_runs_and_policy_decides(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hang = tmp_path / "hang"
    cluster.add("n1", ["vms/cc", "vms/strict"])
    cluster.start()

    def hooks(r: str) -> str:
        freeze = f"if [ -f {hang} ]; then exec sleep 60; fi; touch {tmp_path}/frozen-{r}"
        return f'{{freeze: [sh, -c, "{freeze}"], thaw: [sh, -c, "touch {tmp_path}/thawed-{r}"], timeout: 1s}}'

    cfg = cluster.config(
        f"""\
resources:
  cc: {{kind: vm, volumes: [vms/cc], profile: lenient, quiesce: {hooks("cc")}}}
  strict: {{kind: vm, volumes: [vms/strict], profile: strict, quiesce: {hooks("strict")}}}
profiles:
  lenient:
    periods:
      - {{name: hourly, frequency: hourly, retention: 1d, quiesce: true}}
  strict:
    periods:
      - {{name: hourly, frequency: hourly, retention: 1d, quiesce: true, quiesce_policy: fail}}
"""
    )
    clock = Clock()
    state = tmp_path / "state"
    hang.touch()
    with daemon_in_process(cfg, state, clock) as d:
        started = time.monotonic()
        d.run_pass()
        assert time.monotonic() - started < 10  # the hung hooks were killed at their 1 s timeout
        # the thaw ran for both, although neither froze
        assert (tmp_path / "thawed-cc").exists() and (tmp_path / "thawed-strict").exists()
        assert not (tmp_path / "frozen-cc").exists()
        # crash-consistent policy: a snapshot, marked not quiesced, with a warning
        [cc] = sets_of(d, "resource:cc")
        assert cc.complete and not cc.quiesced
        warned = [
            r.getMessage() for r in caplog.records if r.levelname == "WARNING" and cc.set_id in r.getMessage()
        ]
        assert any("did not finish within 1s" in w and "crash-consistent" in w for w in warned), warned
        # fail policy: no snapshot, a failed condition naming the hook, and a retry scheduled
        assert sets_of(d, "resource:strict") == []
        st = cli_json(state, "status")
        failing = [c for c in st["conditions"] if c["kind"] == "ActionFailing"]
        assert len(failing) == 1 and "resource-strict" in failing[0]["subject"]
        assert "freeze of strict" in failing[0]["message"] and "did not finish" in failing[0]["message"]
        assert d.executor.next_retry() is not None
        # the guest recovers; after the backoff the set is taken, quiesced
        hang.unlink()
        d.run_pass()
        assert sets_of(d, "resource:strict") == []  # still backing off
        clock.advance(minutes=1)
        d.run_pass()
        [strict] = sets_of(d, "resource:strict")
        assert strict.complete and strict.quiesced
        assert d.executor.blocked() == {}


def test_vanished_volume_is_named_and_the_rest_is_snapshotted(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add("n1", ["vms/a", "shares/gone"])
    cluster.add("n2", ["vms/b"])
    cluster.start()
    cfg = cluster.config(
        """\
resources:
  a: {kind: vm, node: n1, volumes: [vms/a]}
  gone: {kind: nas_volume, node: n1, volumes: [shares/gone]}
  b: {kind: vm, node: n2, volumes: [vms/b]}
"""
        + HOURLY
        + "system_snapshots:\n  full: {type: full, profile: hourly}\n"
    )
    for f in (cluster.pools["n1"]["main"] / "shares/gone").iterdir():
        f.unlink()
    (cluster.pools["n1"]["main"] / "shares/gone").rmdir()
    state = tmp_path / "state"
    with daemon_in_process(cfg, state, Clock()) as d:
        d.run_pass()
        [s] = sets_of(d, "system:full")
        assert {(m.node, m.snapshot.volume) for m in s.members} == {("n1", "vms/a"), ("n2", "vms/b")}
        assert not s.complete and s.expected_members == 3
        st = cli_json(state, "status")
        assert all(n["reachable"] for n in st["nodes"])
        failing = [c for c in st["conditions"] if c["kind"] == "ActionFailing"]
        assert len(failing) == 1 and "shares/gone" in failing[0]["message"], failing
        errors = [r["error"] for r in st["recent_actions"] if not r["ok"]]
        assert errors and all("shares/gone" in e and "n1" in e for e in errors)


# --- 5. observation that scales ------------------------------------------------------------------


def test_idle_passes_do_not_relist_and_a_change_relists_only_its_pool(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.add("n1", ["main:vms/a", "other:vms/x"], pools=("main", "other"))
    cluster.add("n2", ["vms/b"])
    cluster.start()
    cfg = cluster.config(
        """\
resources:
  a: {kind: vm, node: n1, pool: main, volumes: [vms/a]}
  x: {kind: vm, node: n1, pool: other, volumes: [vms/x]}
  b: {kind: vm, node: n2, volumes: [vms/b]}
"""
        + HOURLY
        + "system_snapshots:\n  full: {type: full, profile: hourly}\n"
    )
    listed: list[tuple[str, str]] = []
    real = AgentClient.list_snapshots

    def spy(self: AgentClient, pool: str, **kw: Any) -> Any:
        listed.append((self.node, pool))
        return real(self, pool, **kw)

    monkeypatch.setattr(AgentClient, "list_snapshots", spy)
    with daemon_in_process(cfg, tmp_path / "state", Clock()) as d:
        # the offsite sync loop observes too (after each pass, on its own thread): this test
        # counts the daemon's own passes and requests, so that loop does not run here
        d.sync.shutdown()
        d.run_pass()
        d.run_pass()  # sees what the first pass created
        [s] = sets_of(d, "system:full")
        assert s.complete
        before = d.observer.lists_done
        listed.clear()
        started = time.monotonic()
        for _ in range(20):
            assert d.run_pass().plan.actions == ()
        idle = (time.monotonic() - started) / 20
        assert d.observer.lists_done == before and listed == []
        # a manual snapshot of one resource changes one pool: the answer comes from the agent,
        # and the next pass re-lists that pool alone
        m = d.create_manual(scope="resource:a", request_id="r1", expires=T0 + timedelta(days=1))
        assert m.complete and [x.snapshot.volume for x in m.members] == ["vms/a"]
        assert listed == []
        d.run_pass()
        assert listed == [("n1", "main")]
        assert d.observer.lists_done == before + 1
        assert any(x.set_id == m.set_id for x in d.list_sets())
        print(f"idle pass over 2 nodes / 3 pools: {idle * 1000:.1f} ms")


def test_human_status_names_the_down_node_and_why(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add("n1", ["vms/a"])
    cluster.start()
    cfg = cluster.config(
        "resources:\n  a: {kind: vm, volumes: [vms/a]}\n"
        + HOURLY
        + "system_snapshots:\n  full: {type: full, profile: hourly}\n"
    )
    state = tmp_path / "state"
    with daemon_in_process(cfg, state, Clock()) as d:
        cluster.agents["n1"].kill()
        d.run_pass()
        out = cli(state, "status", check=True).stdout
        assert "DOWN" in out and "n1" in out and "unavailable" in out
        assert json.loads(cli(state, "status", "--json", check=True).stdout)["nodes"][0]["reachable"] is False
