"""Hostile and malformed messages to a running agent process, over real gRPC on a unix socket.

Every request below must get a clear status (never INTERNAL, never a stack trace) whose message
names what is wrong; the agent must keep serving; and the pool must be untouched: the catalog rows
and every file under the pool (and outside it) identical before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from reconciler.domain import valid_volume_name
from reconciler.v1 import agent_pb2 as pb
from reconciler.v1 import agent_pb2_grpc as pb_grpc
from tests.helpers import AgentProcess, write

SERVICE = "/reconciler.v1.Agent/"
UNARY = {"GetNodeInfo", "ListVolumes", "CreateSnapshotSet", "DeleteSnapshots", "UpdateSnapshots"}
STREAMS = {"ListSnapshots", "Restore", "Clone", "Verify", "CollectGarbage", "ListFiles"}
MiB = 1024 * 1024


@dataclass
class Env:
    pool: Path
    outside: Path
    agent: AgentProcess
    channel: grpc.Channel
    stub: pb_grpc.AgentStub


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("hostile")
    pool, outside = base / "pool", base / "outside"
    write(outside / "secret.txt", "not yours")
    write(pool / "vms" / "vm1" / "disk.img", "d" * 50_000)
    write(pool / "shares" / "s1" / "a.txt", "hello")
    write(pool / "shares" / "s1" / "sub" / "b.txt", "world")
    os.symlink(outside, pool / "escape")  # a volume that is a symlink out of the pool
    os.symlink(outside, pool / "shares" / "linked")  # a symlinked directory on the way to a volume
    os.symlink(outside / "secret.txt", pool / "shares" / "s1" / "secret-link")  # a link inside a volume
    sock = base / "agent.sock"
    cfg = write(
        base / "agent.yaml",
        json.dumps(
            {
                "node": "n1",
                "listen": f"unix:{sock}",
                "insecure": True,
                "allow_hooks": False,
                "pools": {"main": {"type": "chunkstore", "path": str(pool)}},
            }
        ),
    )
    with (
        AgentProcess(cfg) as agent,
        grpc.insecure_channel(
            f"unix:{sock}", options=[("grpc.max_send_message_length", 64 * MiB)]
        ) as channel,
    ):
        stub = pb_grpc.AgentStub(channel)
        for set_id, immutable in (("base", False), ("locked", True)):
            stub.CreateSnapshotSet(
                pb.CreateSnapshotSetRequest(
                    set_id=set_id,
                    name=set_id,
                    immutable=immutable,
                    targets=[
                        pb.SnapshotTarget(pool="main", volume="vms/vm1"),
                        pb.SnapshotTarget(pool="main", volume="shares/s1"),
                    ],
                ),
                timeout=30,
            )
        yield Env(pool, outside, agent, channel, stub)
        assert agent.proc is not None and agent.proc.poll() is None, "the agent died"
    log = agent.log.read_text()
    assert "Traceback" not in log, log


def _tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if name.startswith("catalog.db"):
                continue  # compared by content below (sqlite may checkpoint its WAL at any time)
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def state(e: Env) -> dict[str, Any]:
    db = sqlite3.connect(e.pool / ".reconciler" / "catalog.db")
    try:
        rows = db.execute("SELECT * FROM snapshots ORDER BY set_id, volume").fetchall()
        meta = db.execute("SELECT * FROM meta ORDER BY key").fetchall()
    finally:
        db.close()
    return {"rows": rows, "meta": meta, "pool": _tree(e.pool), "outside": _tree(e.outside)}


@pytest.fixture
def untouched(env: Env) -> Iterator[Env]:
    before = state(env)
    assert len(before["rows"]) == 4
    yield env
    info = env.stub.GetNodeInfo(pb.GetNodeInfoRequest(), timeout=10)  # still serving
    assert info.node == "n1"
    after = state(env)
    assert after["rows"] == before["rows"]
    assert after["meta"] == before["meta"]  # not even the generation moved
    assert after["pool"] == before["pool"]
    assert after["outside"] == before["outside"]


def call(e: Env, method: str, request: Message | bytes, timeout: float = 30) -> list[bytes]:
    """Any RPC with raw bytes or a message; returns the raw response message(s)."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    if method in UNARY:
        fn = e.channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
        return [fn(data, timeout=timeout)]
    assert method in STREAMS
    stream = e.channel.unary_stream(SERVICE + method, request_serializer=None, response_deserializer=None)
    return list(stream(data, timeout=timeout))


def refused(e: Env, method: str, request: Message | bytes, code: grpc.StatusCode, *words: str) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(e, method, request)
    err = info.value
    details = err.details() or ""
    assert err.code() == code, f"{method}: {err.code()} {details!r}"
    assert "Traceback" not in details and "internal error" not in details, details
    for w in words:
        assert w in details, f"{method}: {w!r} not in {details!r}"
    return details


def ref(set_id: str = "base", volume: str = "vms/vm1", pool: str = "main") -> pb.SnapshotRef:
    return pb.SnapshotRef(set_id=set_id, pool=pool, volume=volume)


def create(set_id: str = "evil", *volumes: str, **kw: Any) -> pb.CreateSnapshotSetRequest:
    return pb.CreateSnapshotSetRequest(
        set_id=set_id,
        name=set_id,
        targets=[pb.SnapshotTarget(pool="main", volume=v) for v in volumes or ("vms/vm1",)],
        **kw,
    )


# --- bytes that are not the message they claim to be -------------------------------------------
GARBAGE = [
    b"\xff" * 64,  # a varint that never ends
    b"\x0a\xff\xff\xff\xff\x0f",  # a string field claiming 4 GiB
    b"\x0a\x05\xff\xfe\xfd\xfc\xfb",  # field 1 as a string of invalid UTF-8
    b"\x0f",  # field 1 with the reserved wire type 7
    b"\x1a\x10\x0a\x02",  # an embedded message cut short
]


@pytest.mark.parametrize("method", sorted(UNARY | STREAMS))
def test_malformed_bytes_to_every_method(untouched: Env, method: str) -> None:
    for garbage in GARBAGE:
        refused(untouched, method, garbage, grpc.StatusCode.INVALID_ARGUMENT, "malformed", method)


def test_oversized_message_is_refused_before_it_is_read(untouched: Env) -> None:
    big = create("big")
    big.name = "n" * (17 * MiB)
    with pytest.raises(grpc.RpcError) as info:
        call(untouched, "CreateSnapshotSet", big)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (info.value.details() or "")


# --- paths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("volume", "code", "words"),
    [
        ("../outside", grpc.StatusCode.INVALID_ARGUMENT, ["'../outside'", "no '..'"]),
        ("vms/../../outside", grpc.StatusCode.INVALID_ARGUMENT, ["'vms/../../outside'"]),
        ("/etc", grpc.StatusCode.INVALID_ARGUMENT, ["'/etc'", "absolute"]),
        ("", grpc.StatusCode.INVALID_ARGUMENT, ["''"]),
        ("vms//vm1", grpc.StatusCode.INVALID_ARGUMENT, ["'vms//vm1'"]),
        ("./vms", grpc.StatusCode.INVALID_ARGUMENT, ["'./vms'"]),
        ("vms/vm1\x00/x", grpc.StatusCode.INVALID_ARGUMENT, ["vms/vm1"]),
        ("vms/vm1\n", grpc.StatusCode.INVALID_ARGUMENT, ["'vms/vm1\\n'"]),  # ($ would take it)
        ("escape", grpc.StatusCode.INVALID_ARGUMENT, ["'escape'", "symlink"]),
        ("shares/linked", grpc.StatusCode.INVALID_ARGUMENT, ["'shares/linked'", "symlink"]),
        ("shares/linked/inner", grpc.StatusCode.INVALID_ARGUMENT, ["'shares/linked/inner'", "symlink"]),
        (".reconciler", grpc.StatusCode.INVALID_ARGUMENT, ["'.reconciler'"]),
        ("x" * 5000, grpc.StatusCode.INVALID_ARGUMENT, ["xxxx"]),
        ("no/such/volume", grpc.StatusCode.NOT_FOUND, ["'no/such/volume'", "does not exist"]),
    ],
)
def test_volume_names_that_leave_the_pool_are_refused(
    untouched: Env, volume: str, code: grpc.StatusCode, words: list[str]
) -> None:
    refused(untouched, "CreateSnapshotSet", create("evil", volume), code, *words)
    if code == grpc.StatusCode.INVALID_ARGUMENT and volume:  # an empty new_volume means "over the source"
        for method, req in [
            ("Clone", pb.CloneRequest(ref=ref(), new_volume=volume)),
            ("Restore", pb.RestoreRequest(ref=ref(), new_volume=volume)),
        ]:
            refused(untouched, method, req, code, *words)
    # deleting through such a name touches nothing: a bad name is refused, a well-formed one (a
    # symlink, a missing volume) has no snapshot, and deleting a missing snapshot succeeds (CSI)
    [raw] = call(untouched, "DeleteSnapshots", pb.DeleteSnapshotsRequest(refs=[ref("base", volume)]))
    [res] = pb.DeleteSnapshotsResponse.FromString(raw).results
    assert res.deleted is valid_volume_name(volume)
    if not res.deleted:
        assert repr(volume)[:50] in res.error and "no '..'" in res.error


def test_a_volume_holding_a_symlink_out_of_the_pool_keeps_it_a_link(untouched: Env) -> None:
    [page, *_] = [
        pb.ListFilesPage.FromString(r)
        for r in call(untouched, "ListFiles", pb.ListFilesRequest(ref=ref("base", "shares/s1")))
    ]
    entries = {f.path: f for f in page.entries}
    assert entries["secret-link"].kind == "symlink"  # recorded as a link, the target not read
    refused(
        untouched,
        "ListFiles",
        pb.ListFilesRequest(ref=ref("base", "shares/s1"), prefix="secret-link/../../outside"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "secret-link/../../outside",
    )


@pytest.mark.parametrize(
    "paths", [["../../outside/secret.txt"], ["/etc/passwd"], ["a.txt", "sub/../../x"], [""]]
)
def test_restore_paths_that_leave_the_volume_are_refused(untouched: Env, paths: list[str]) -> None:
    bad = next(p for p in paths if p in ("", "/etc/passwd") or ".." in p)
    req = pb.RestoreRequest(ref=ref("base", "shares/s1"), new_volume="shares/restored", paths=paths)
    refused(untouched, "Restore", req, grpc.StatusCode.INVALID_ARGUMENT, repr(bad))
    req = pb.RestoreRequest(ref=ref("base", "shares/s1"), paths=paths, skip_safety_snapshot=True)
    refused(untouched, "Restore", req, grpc.StatusCode.INVALID_ARGUMENT, repr(bad))


def test_restore_or_clone_into_an_existing_volume_is_refused(untouched: Env) -> None:
    for method, req in [
        ("Restore", pb.RestoreRequest(ref=ref(), new_volume="shares/s1")),
        ("Clone", pb.CloneRequest(ref=ref(), new_volume="shares/s1")),
        ("Clone", pb.CloneRequest(ref=ref(), new_volume="vms")),  # a parent of a volume
    ]:
        refused(untouched, method, req, grpc.StatusCode.FAILED_PRECONDITION, "already exists")


# --- unknown ids and names --------------------------------------------------------------------------
def test_unknown_set_ids_and_pools(untouched: Env) -> None:
    nf = grpc.StatusCode.NOT_FOUND
    refused(untouched, "Restore", pb.RestoreRequest(ref=ref("nope")), nf, "nope")
    refused(untouched, "Restore", pb.RestoreRequest(ref=ref("nope"), new_volume="x/y"), nf, "nope")
    refused(untouched, "Clone", pb.CloneRequest(ref=ref("nope"), new_volume="x/y"), nf, "nope")
    refused(untouched, "ListFiles", pb.ListFilesRequest(ref=ref("nope")), nf, "nope")
    refused(untouched, "Verify", pb.VerifyRequest(pool="main", set_id="nope"), nf, "nope")
    upd = pb.SnapshotUpdate(ref=ref("nope"), fields=["expires"])
    refused(untouched, "UpdateSnapshots", pb.UpdateSnapshotsRequest(updates=[upd]), nf, "nope")
    # a missing snapshot counts as deleted (CSI), and nothing else moves
    [raw] = call(untouched, "DeleteSnapshots", pb.DeleteSnapshotsRequest(refs=[ref("nope")]))
    assert [r.deleted for r in pb.DeleteSnapshotsResponse.FromString(raw).results] == [True]
    for method, req in [
        ("ListSnapshots", pb.ListSnapshotsRequest(pool="nopool")),
        ("ListVolumes", pb.ListVolumesRequest(pool="nopool")),
        ("Verify", pb.VerifyRequest(pool="nopool")),
        ("CollectGarbage", pb.CollectGarbageRequest(pool="nopool")),
        (
            "CreateSnapshotSet",
            pb.CreateSnapshotSetRequest(set_id="s", targets=[pb.SnapshotTarget(pool="nopool", volume="v")]),
        ),
        ("ListFiles", pb.ListFilesRequest(ref=ref(pool="nopool"))),
    ]:
        refused(untouched, method, req, nf, "'nopool'")


@pytest.mark.parametrize("set_id", ["", "../x", "a/b", "x" * 300, "-lead", "with space", "ü", "x\n"])
def test_invalid_set_ids(untouched: Env, set_id: str) -> None:
    ia = grpc.StatusCode.INVALID_ARGUMENT
    refused(untouched, "CreateSnapshotSet", create(set_id), ia, "set id", "not valid")
    refused(
        untouched, "Verify", pb.VerifyRequest(pool="main", set_id=set_id), ia, "set id"
    ) if set_id else None
    [raw] = call(untouched, "DeleteSnapshots", pb.DeleteSnapshotsRequest(refs=[ref(set_id)]))
    [res] = pb.DeleteSnapshotsResponse.FromString(raw).results
    assert not res.deleted and "set id" in res.error


# --- sizes --------------------------------------------------------------------------------------------
def test_huge_label_maps_are_refused(untouched: Env) -> None:
    ia = grpc.StatusCode.INVALID_ARGUMENT
    many = create("labels", labels={f"k{i}": "v" for i in range(100_000)})
    refused(untouched, "CreateSnapshotSet", many, ia, "labels")
    large = create("labels", labels={"k": "v" * (8 * MiB)})
    refused(untouched, "CreateSnapshotSet", large, ia, "labels")


def test_an_invalid_site_name_is_refused(untouched: Env) -> None:
    bad = create("site", site="x" * 4096)
    refused(untouched, "CreateSnapshotSet", bad, grpc.StatusCode.INVALID_ARGUMENT, "invalid site name")


def test_twenty_thousand_targets_are_refused(untouched: Env) -> None:
    req = create("wide", *[f"vms/vm{i}" for i in range(20_000)])
    refused(untouched, "CreateSnapshotSet", req, grpc.StatusCode.INVALID_ARGUMENT, "20000 volumes", "at most")


def test_duplicate_targets_are_refused(untouched: Env) -> None:
    req = create("dup", "vms/vm1", "vms/vm1")
    refused(untouched, "CreateSnapshotSet", req, grpc.StatusCode.INVALID_ARGUMENT, "listed twice")


def test_quiesce_hooks_are_refused_when_the_agent_does_not_run_them(untouched: Env) -> None:
    req = create(
        "hooked",
        quiesce=[
            pb.QuiesceGroup(resource="", hooks=pb.QuiesceHooks(freeze=["rm", "-rf", "/"], thaw=["true"]))
        ],
    )
    req.targets[0].resource = ""
    refused(untouched, "CreateSnapshotSet", req, grpc.StatusCode.FAILED_PRECONDITION, "allow_hooks")


def test_timestamps_out_of_range_are_invalid_arguments(untouched: Env) -> None:
    ia = grpc.StatusCode.INVALID_ARGUMENT
    for seconds, nanos in [(10**15, 0), (-(10**15), 0), (0, 2_000_000_000), (0, -1)]:
        req = create("when")
        req.created.seconds, req.created.nanos = seconds, nanos
        refused(untouched, "CreateSnapshotSet", req, ia, "created")
        req = create("when")
        req.expires.seconds, req.expires.nanos = seconds, nanos
        refused(untouched, "CreateSnapshotSet", req, ia, "expires")
        upd = pb.SnapshotUpdate(ref=ref(), fields=["expires"])
        upd.expires.seconds, upd.expires.nanos = seconds, nanos
        refused(untouched, "UpdateSnapshots", pb.UpdateSnapshotsRequest(updates=[upd]), ia, "expires")


# --- updates ------------------------------------------------------------------------------------------
def test_updates_with_wrong_fields(untouched: Env) -> None:
    ia = grpc.StatusCode.INVALID_ARGUMENT

    def update(**kw: Any) -> pb.UpdateSnapshotsRequest:
        return pb.UpdateSnapshotsRequest(updates=[pb.SnapshotUpdate(ref=ref(), **kw)])

    refused(untouched, "UpdateSnapshots", update(fields=["bogus"]), ia, "'bogus'", "not understood")
    refused(untouched, "UpdateSnapshots", update(fields=[]), ia, "not understood")
    refused(untouched, "UpdateSnapshots", update(fields=["lock", "unlock"]), ia, "lock and unlock")
    # wrong wire types: `fields` (a repeated string, field 2) sent as a varint, set_id as a varint
    wrong = b"\x0a" + bytes([len(b"\x12\x04main")]) + b"\x12\x04main" + b"\x10\x05"
    refused(untouched, "UpdateSnapshots", b"\x0a" + bytes([len(wrong)]) + wrong, ia)
    refused(untouched, "UpdateSnapshots", b"\x0a\x04\x0a\x02\x08\x01", ia)
    # half of a batch being bad changes nothing, not even the good half
    good = pb.SnapshotUpdate(ref=ref(), fields=["holds"], add_holds=["op"])
    bad = pb.SnapshotUpdate(ref=ref("nope"), fields=["holds"], add_holds=["op"])
    refused(
        untouched,
        "UpdateSnapshots",
        pb.UpdateSnapshotsRequest(updates=[good, bad]),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )


def test_unlock_of_a_snapshot_that_is_not_immutable(untouched: Env) -> None:
    upd = pb.SnapshotUpdate(ref=ref("base"), fields=["unlock"], unlock_delay_s=1)
    refused(
        untouched,
        "UpdateSnapshots",
        pb.UpdateSnapshotsRequest(updates=[upd]),
        grpc.StatusCode.FAILED_PRECONDITION,
        "vms/vm1",
        "base",
        "not immutable",
    )


def test_delete_of_a_locked_snapshot_is_refused_per_ref(untouched: Env) -> None:
    [raw] = call(untouched, "DeleteSnapshots", pb.DeleteSnapshotsRequest(refs=[ref("locked")]))
    [res] = pb.DeleteSnapshotsResponse.FromString(raw).results
    assert not res.deleted and "immutable (locked)" in res.error and "locked" in res.error


def test_huge_or_empty_holds_are_refused(untouched: Env) -> None:
    ia = grpc.StatusCode.INVALID_ARGUMENT
    for holds in ([f"h{i}" for i in range(100_000)], [""], ["h" * 10_000]):
        upd = pb.SnapshotUpdate(ref=ref(), fields=["holds"], add_holds=holds)
        refused(
            untouched, "UpdateSnapshots", pb.UpdateSnapshotsRequest(updates=[upd]), ia, "holds", "vms/vm1"
        )


# --- mutated requests ---------------------------------------------------------------------------------
SEEDS = [
    ("GetNodeInfo", pb.GetNodeInfoRequest(expect_node="n1")),
    ("ListVolumes", pb.ListVolumesRequest(pool="main")),
    ("ListSnapshots", pb.ListSnapshotsRequest(pool="main", page_size=2, with_usage=True)),
    ("ListFiles", pb.ListFilesRequest(ref=ref("base", "shares/s1"), prefix="sub", limit=5)),
    ("Verify", pb.VerifyRequest(pool="main", set_id="base")),
    ("DeleteSnapshots", pb.DeleteSnapshotsRequest(refs=[ref("nope", "shares/s1"), ref("gone", "vms/vm1")])),
    (
        "UpdateSnapshots",
        pb.UpdateSnapshotsRequest(updates=[pb.SnapshotUpdate(ref=ref("nope"), fields=["holds"])]),
    ),
    ("CreateSnapshotSet", create("fuzz", "no/such/volume")),
    ("Clone", pb.CloneRequest(ref=ref("nope"), new_volume="clones/x")),
]


def test_thousands_of_bit_flipped_requests_get_statuses_not_crashes(untouched: Env) -> None:
    """Valid requests (that change nothing) with random bytes flipped, dropped or inserted: every
    answer is a success or a deliberate status; never INTERNAL or UNKNOWN; the agent stays up."""
    import random

    rng = random.Random(1126)
    seen: dict[str, int] = {}
    for _ in range(2000):
        method, msg = rng.choice(SEEDS)
        data = bytearray(msg.SerializeToString())
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data) + 1)
            op = rng.randrange(3)
            if op == 0 and i < len(data):
                data[i] ^= 1 << rng.randrange(8)
            elif op == 1 and i < len(data):
                del data[i]
            else:
                data.insert(i, rng.randrange(256))
        try:
            call(untouched, method, bytes(data), timeout=10)
            seen["OK"] = seen.get("OK", 0) + 1
        except grpc.RpcError as err:
            code = err.code()
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (method, bytes(data), err)
            assert "Traceback" not in (err.details() or "")
            seen[code.name] = seen.get(code.name, 0) + 1
    assert seen.get("INVALID_ARGUMENT", 0) > 100 and seen.get("NOT_FOUND", 0) > 10, seen
