"""Restores, clones, single files, tenants and immutability through the real CLI and daemon."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RECONCILER, DaemonProcess, cli, cli_json, env_for, wait_for, write

TOKEN_ACME = "acme-secret-token"
TOKEN_BETA = "beta-secret-token"

CONFIG = f"""\
version: 1
nodes:
  local:
    embedded: true
    pools:
      main: {{type: chunkstore, path: ./pool, create: true}}
tenants:
  acme: {{api_token_sha256: {hashlib.sha256(TOKEN_ACME.encode()).hexdigest()}}}
  beta: {{api_token_sha256: {hashlib.sha256(TOKEN_BETA.encode()).hexdigest()}}}
resources:
  web:
    kind: vm
    volumes: [vms/web/disk0, vms/web/disk1]
    tenant: acme
    tags: [web]
  files:
    kind: nas_volume
    volumes: [shares/files]
    tenant: acme
  other:
    kind: nas_volume
    volumes: [shares/other]
    tenant: beta
profiles:
  never:
    periods:
      - {{name: yearly, frequency: yearly, month: 1, day_of_month: 1, retention: 1d}}
system_snapshots:
  full: {{type: full, profile: never}}
  webonly: {{type: partial, include_tags: [web], profile: never}}
"""


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    pool = tmp_path / "pool"
    write(pool / "vms/web/disk0/disk.img", "disk0-v1" * 1000)
    write(pool / "vms/web/disk1/disk.img", "disk1-v1" * 1000)
    write(pool / "shares/files/a.txt", "a-v1")
    write(pool / "shares/files/dir/b.txt", "b-v1")
    write(pool / "shares/other/o.txt", "o-v1")
    cfg = write(tmp_path / "config.yaml", CONFIG)
    with DaemonProcess(cfg, tmp_path / "state") as d:
        yield d, pool


def snap(d: DaemonProcess, scope: str, *extra: str) -> str:
    s = cli_json(d.state_dir, "snapshot", "create", scope, "--expires", "1d", *extra)
    assert s["complete"], s
    return str(s["set_id"])


def restore(d: DaemonProcess, *args: str) -> Any:
    return cli_json(d.state_dir, "restore", *args)


def test_resource_restore_to_new_and_over_source(env: tuple[DaemonProcess, Path]) -> None:
    d, pool = env
    set_id = snap(d, "system:full")
    (pool / "vms/web/disk0/disk.img").write_text("disk0-v2")
    before_live = tree(pool / "vms/web")

    out = restore(d, "resource", "web", "--set", set_id)
    assert out["result"]["ok"], out
    plan = out["events"][0]["plan"]
    assert "not added to the config" in plan["summary"]
    assert (pool / "vms/web_restored/disk0/disk.img").read_text() == "disk0-v1" * 1000
    assert (pool / "vms/web_restored/disk1/disk.img").read_text() == "disk1-v1" * 1000
    assert tree(pool / "vms/web") == before_live  # restore to new never touches the source

    # again: the default name is taken, so the copy gets the next free number
    out = restore(d, "resource", "web", "--set", set_id)
    assert "as 'web_restored_2'" in out["events"][0]["plan"]["summary"]
    assert (pool / "vms/web_restored_2/disk0/disk.img").read_text() == "disk0-v1" * 1000
    assert (pool / "vms/web_restored/disk0/disk.img").read_text() == "disk0-v1" * 1000  # untouched
    # a name asked for is never changed: taken, it is refused before anything is written
    r = cli(d.state_dir, "restore", "resource", "web", "--set", set_id, "--as", "web_restored")
    assert r.returncode == 5 and "already exist" in r.stderr and "--as" in r.stderr

    # over the source: refused without confirmation, live data untouched
    r = cli(d.state_dir, "restore", "resource", "web", "--set", set_id, "--over-source")
    assert r.returncode == 5 and "--yes" in r.stderr
    assert tree(pool / "vms/web") == before_live
    out = restore(d, "resource", "web", "--set", set_id, "--over-source", "--yes")
    res = out["result"]
    assert res["ok"] and res["safety_set_id"]
    assert (pool / "vms/web/disk0/disk.img").read_text() == "disk0-v1" * 1000
    sets = {s["set_id"]: s for s in cli_json(d.state_dir, "snapshot", "list")}
    safety = sets[res["safety_set_id"]]
    assert safety["kind"] == "safety" and safety["complete"] and safety["expires"]

    # a resource the set does not contain
    partial = snap(d, "system:webonly")
    r = cli(d.state_dir, "restore", "resource", "files", "--set", partial)
    assert r.returncode == 3 and "does not contain resource 'files'" in r.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(env: tuple[DaemonProcess, Path]) -> None:
    d, pool = env
    set_id = snap(d, "resource:files")
    r = cli(
        d.state_dir, "restore", "resource", "files", "--set", set_id, "--as", "copy", "--dry-run", check=True
    )
    assert "write local/main/shares/files as new volume local/main/shares/copy" in r.stdout
    assert not (pool / "shares/copy").exists()


def test_tenant_restore_as_new_tenant_and_clone(env: tuple[DaemonProcess, Path]) -> None:
    d, pool = env
    set_id = snap(d, "system:full")
    out = restore(d, "tenant", "acme", "--set", set_id, "--as", "acme2")
    vols = out["result"]["volumes"]
    # the volumes do not name the tenant: each resource is renamed, a VM's disks stay together
    assert sorted(vols) == [
        "local/main/shares/files_acme2",
        "local/main/vms/web_acme2/disk0",
        "local/main/vms/web_acme2/disk1",
    ]
    assert (pool / "shares/files_acme2/dir/b.txt").read_text() == "b-v1"
    assert (pool / "vms/web_acme2/disk1/disk.img").read_text() == "disk1-v1" * 1000
    assert not (pool / "shares/other_acme2").exists()  # beta's resource is not part of it
    out = cli_json(d.state_dir, "clone", "resource", "files", "--set", set_id)
    assert out["result"]["ok"]
    (pool / "shares/files_clone/a.txt").write_text("writable")  # a clone is a writable copy
    assert (pool / "shares/files/a.txt").read_text() == "a-v1"


def test_whole_system_restore_only_from_complete_full_sets(env: tuple[DaemonProcess, Path]) -> None:
    d, pool = env
    full = snap(d, "system:full")
    partial = snap(d, "system:webonly")
    r = cli(d.state_dir, "restore", "system", "--set", partial, "--yes")
    assert r.returncode == 5 and "not a full system set" in r.stderr
    r = cli(d.state_dir, "restore", "system", "--set", full)
    assert r.returncode == 5 and "confirm with --yes" in r.stderr
    for f in ("vms/web/disk0/disk.img", "shares/files/a.txt", "shares/other/o.txt"):
        (pool / f).write_text("changed")
    out = restore(d, "system", "--set", full, "--yes", "--cancel-window", "1")
    assert out["result"]["ok"] and out["result"]["safety_set_id"]
    # the plan, then the cancel window counting down, then the work
    phases = [ev["progress"]["phase"] for ev in out["events"] if "progress" in ev]
    assert phases[0] == "cancel window" and phases[-1] != "cancel window"
    assert (pool / "shares/other/o.txt").read_text() == "o-v1"
    assert (pool / "shares/files/a.txt").read_text() == "a-v1"
    assert (pool / "vms/web/disk0/disk.img").read_text() == "disk0-v1" * 1000


def test_ctrl_c_in_the_cancel_window_of_a_system_restore_changes_nothing(
    env: tuple[DaemonProcess, Path],
) -> None:
    d, pool = env
    full = snap(d, "system:full")
    (pool / "shares/files/a.txt").write_text("changed")
    before = {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list")}
    proc = subprocess.Popen(
        [*RECONCILER, "restore", "system", "--set", full, "--yes", "--cancel-window", "60"],
        env=env_for(d.state_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background inherits SIGINT ignored, and so would the CLI
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the countdown, one line a second without a terminal
        assert "cancel window" in line and "starts in" in line, line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "nothing was changed" in err, err
    assert f"to set {full}" in out  # the plan was shown first
    time.sleep(1.5)  # past where the daemon would have looked again
    assert (pool / "shares/files/a.txt").read_text() == "changed"  # the live data is untouched
    after = {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list")}
    assert after == before  # not even a safety snapshot
    assert "cancelled in its window" in d.output()

    # without a window it starts at once
    out2 = restore(d, "system", "--set", full, "--yes", "--cancel-window", "0")
    assert out2["result"]["ok"]
    assert not any(ev.get("progress", {}).get("phase") == "cancel window" for ev in out2["events"])
    assert (pool / "shares/files/a.txt").read_text() == "a-v1"
    r = cli(d.state_dir, "restore", "system", "--set", full, "--yes", "--cancel-window", "-1")
    assert r.returncode == 2 and "0-3600 seconds" in r.stderr


def test_a_set_that_expires_under_a_restore_is_deleted_only_after_it(
    env: tuple[DaemonProcess, Path],
) -> None:
    d, pool = env
    short = snap(d, "system:full", "--expires", "3s")
    snap(d, "system:full")  # newer: the short one is not the last of its scope, so it goes when it expires
    (pool / "shares/files/a.txt").write_text("changed")
    proc = subprocess.Popen(
        [*RECONCILER, "restore", "resource", "files", "--set", short, "--over-source", "--yes"]
        + ["--cancel-window", "7"],
        env=env_for(d.state_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "cancel window" in proc.stderr.readline()
        r = cli(d.state_dir, "snapshot", "delete", short)
        assert r.returncode == 5 and "being restored from" in r.stderr
        time.sleep(4.5)  # expired: the daemon's pass at its expiry wants it deleted, and waits
        assert short in {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list")}
        plan = cli_json(d.state_dir, "plan")  # the dry-run says so too
        assert short not in {a["set_id"] for a in plan["actions"]}
        assert any(short in n and "a restore is reading it" in n for n in plan["notes"])
        assert not any("a restore is reading it" in w for w in plan["warnings"])  # not a problem
        st = cli_json(d.state_dir, "status")  # the last pass noted it too
        assert any(short in n and "a restore is reading it" in n for n in st["notes"]), st
        assert not any("a restore is reading it" in w for w in st.get("warnings", []))
        human = cli(d.state_dir, "status")
        assert f"note: deleting set {short} waits: a restore is reading it" in human.stdout
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert (pool / "shares/files/a.txt").read_text() == "a-v1"
    assert d.output().count("waits: a restore is reading it") == 1  # once, not every pass
    # the restore over, the next pass deletes it
    wait_for(
        lambda: short not in {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list")},
        timeout=30,
        what="the expired set deleted after the restore",
    )


def test_single_files_list_and_restore(env: tuple[DaemonProcess, Path]) -> None:
    d, pool = env
    set_id = snap(d, "resource:files")
    listing = cli_json(d.state_dir, "files", set_id, "files")
    paths = {f["path"]: f for f in listing["files"]}
    assert {"a.txt", "dir", "dir/b.txt"} <= set(paths)
    assert paths["dir/b.txt"]["size"] == "4" or paths["dir/b.txt"]["size"] == 4
    (pool / "shares/files/dir/b.txt").write_text("b-v2")
    (pool / "shares/files/a.txt").write_text("a-v2")
    out = restore(d, "files", "files", "dir/b.txt", "--set", set_id, "--over-source", "--yes")
    assert out["result"]["ok"]
    assert (pool / "shares/files/dir/b.txt").read_text() == "b-v1"
    assert (pool / "shares/files/a.txt").read_text() == "a-v2"  # other files untouched
    out = restore(d, "files", "files", "a.txt", "--set", set_id, "--as", "shares/rescued")
    assert (pool / "shares/rescued/a.txt").read_text() == "a-v1"
    # the volume asked for is there now: refused when planned (a dry run too), nothing written
    (pool / "shares/rescued/a.txt").write_text("edited")
    again = ("restore", "files", "files", "a.txt", "--set", set_id, "--as", "shares/rescued")
    for extra in ((), ("--dry-run",)):
        r = cli(d.state_dir, *again, *extra)
        assert r.returncode == 5, (r.stdout, r.stderr)
        assert "local/main/shares/rescued already exist" in r.stderr and "--as" in r.stderr
    assert (pool / "shares/rescued/a.txt").read_text() == "edited"
    r = cli(d.state_dir, "restore", "files", "files", "../../etc/passwd", "--set", set_id, "--as", "x")
    assert r.returncode == 2 and "stay inside" in r.stderr


def test_tenant_tokens_see_and_restore_only_their_own(env: tuple[DaemonProcess, Path]) -> None:
    d, pool = env
    full = snap(d, "system:full")  # provider set: private
    acme_set = snap(d, "resource:files")
    beta_set = snap(d, "resource:other")
    acme = ("--token", TOKEN_ACME)
    seen = {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list", *acme)}
    assert acme_set in seen and beta_set not in seen and full not in seen
    r = cli(d.state_dir, "restore", "resource", "other", "--set", beta_set, *acme)
    assert r.returncode == 3  # another tenant's set is invisible
    r = cli(d.state_dir, "restore", "resource", "other", "--set", full, *acme)
    assert r.returncode == 3
    # the provider exposes the system set: acme can restore its own resource out of it, not beta's
    cli(d.state_dir, "snapshot", "expose", full, "--tenant", "acme", check=True)
    assert full in {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list", *acme)}
    out = cli_json(d.state_dir, "restore", "resource", "files", "--set", full, "--as", "mine", *acme)
    assert out["result"]["ok"]
    r = cli(d.state_dir, "restore", "resource", "other", "--set", full, *acme)
    assert r.returncode == 6 and "does not belong to tenant acme" in r.stderr
    # a manual system set taken --no-private: each tenant sees it, for its own resources
    public = cli_json(d.state_dir, "snapshot", "create", "system:full", "--expires", "1d", "--no-private")
    listed = {s["set_id"]: s for s in cli_json(d.state_dir, "snapshot", "list")}
    assert public["private"] is False and listed[full]["private"] is True  # the default for system
    assert public["set_id"] in {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list", *acme)}
    out = cli_json(
        d.state_dir, "restore", "resource", "files", "--set", public["set_id"], "--as", "pub", *acme
    )
    assert out["result"]["ok"]
    r = cli(d.state_dir, "snapshot", "create", "resource:files", "--expires", "1d", "--private")
    assert r.returncode == 2 and "system snapshots only" in r.stderr
    r = cli(d.state_dir, "status", *acme)
    assert r.returncode == 6
    r = cli(d.state_dir, "status", "--token", "wrong")
    assert r.returncode == 6 and "matches no tenant" in r.stderr
    assert not (pool / "shares/other_restored").exists()


def test_immutable_lock_unlock_states_and_settings(env: tuple[DaemonProcess, Path]) -> None:
    d, _pool = env
    set_id = snap(d, "resource:files", "--immutable")
    r = cli(d.state_dir, "snapshot", "delete", set_id)
    assert r.returncode == 5 and "immutable (locked)" in r.stderr
    s = cli_json(d.state_dir, "snapshot", "unlock", set_id, "--wait", "1s")
    # the embedded agent's floor (1 day) wins over a shorter wait
    assert s["immutable"] == "unlocking" and s["unlock_at"]
    r = cli(d.state_dir, "snapshot", "delete", set_id)
    assert r.returncode == 5 and "unlocking" in r.stderr
    human = cli(d.state_dir, "snapshot", "list", check=True).stdout
    assert "unlocking" in human
    s = cli_json(d.state_dir, "snapshot", "lock", set_id)
    assert s["immutable"] == "locked"
    out = restore(d, "resource", "files", "--set", set_id, "--with-settings", "--as", "withsettings")
    settings = json.loads(Path(out["result"]["settings_file"]).read_text())
    assert settings["files"]["kind"] == "nas_volume" and settings["files"]["tenant"] == "acme"


def test_space_per_set(env: tuple[DaemonProcess, Path]) -> None:
    d, pool = env
    first = snap(d, "resource:web")
    (pool / "vms/web/disk0/disk.img").write_bytes(bytes(range(256)) * 4096)
    second = snap(d, "resource:web")
    sets = {s["set_id"]: s for s in cli_json(d.state_dir, "snapshot", "list", "--usage")}
    assert int(sets[first]["logical_bytes"]) == 16_000
    assert int(sets[second]["unique_bytes"]) > int(sets[first]["unique_bytes"])
    st = cli_json(d.state_dir, "status")
    assert int(st["nodes"][0]["pools"][0]["stored_bytes"]) > 0


def test_files_as_the_source_volume_is_refused_not_restored_in_place(env: tuple[DaemonProcess, Path]) -> None:
    """--as names a new volume: naming the source volume must not become a restore over the live
    data (which would skip --yes and the safety snapshot)."""
    d, pool = env
    set_id = snap(d, "system:full")
    (pool / "shares/files/a.txt").write_text("live")
    before = {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list")}
    r = cli(d.state_dir, "restore", "files", "files", "a.txt", "--set", set_id, "--as", "shares/files")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--over-source" in r.stderr and "shares/files" in r.stderr
    assert (pool / "shares/files/a.txt").read_text() == "live"  # untouched
    assert {s["set_id"] for s in cli_json(d.state_dir, "snapshot", "list")} == before


def test_a_new_copy_goes_to_the_pool_named_with_pool(tmp_path: Path) -> None:
    """--pool puts a restore or clone to a new copy in another pool of the same node; a restore
    over the source, or an unknown pool, is refused with the reason."""
    pool = tmp_path / "pool"
    write(pool / "vms/web/disk0/disk.img", "disk0-v1")
    write(pool / "vms/web/disk1/disk.img", "disk1-v1")
    write(pool / "shares/files/a.txt", "a-v1")
    write(pool / "shares/other/o.txt", "o-v1")
    cfg = CONFIG.replace(
        "      main: {type: chunkstore, path: ./pool, create: true}\n",
        "      main: {type: chunkstore, path: ./pool, create: true}\n"
        "      spare: {type: chunkstore, path: ./spare, create: true}\n",
    ).replace("    kind: ", "    pool: main\n    kind: ")
    with DaemonProcess(write(tmp_path / "config.yaml", cfg), tmp_path / "state") as d:
        set_id = snap(d, "system:full")
        (pool / "vms/web/disk0/disk.img").write_text("disk0-v2")
        spare = tmp_path / "spare"

        dry = restore(d, "resource", "web", "--set", set_id, "--pool", "spare", "--dry-run")
        plan = dry["events"][0]["plan"]
        assert {s["target_pool"] for s in plan["steps"]} == {"spare"}, plan
        assert "in pool spare" in plan["summary"]
        assert not (spare / "vms").exists()

        out = restore(d, "resource", "web", "--set", set_id, "--pool", "spare")
        assert out["result"]["ok"], out
        assert (spare / "vms/web_restored/disk0/disk.img").read_text() == "disk0-v1"
        assert (spare / "vms/web_restored/disk1/disk.img").read_text() == "disk1-v1"
        assert not (pool / "vms/web_restored").exists()
        assert (pool / "vms/web/disk0/disk.img").read_text() == "disk0-v2"  # live untouched

        # the default name is taken in spare, not in main: the next copy number there
        again = restore(d, "resource", "web", "--set", set_id, "--pool", "spare")
        assert (spare / "vms/web_restored_2/disk0/disk.img").read_text() == "disk0-v1", again

        cl = cli_json(d.state_dir, "clone", "resource", "files", "--set", set_id, "--pool", "spare")
        assert cl["result"]["ok"], cl
        assert (spare / "shares/files_clone/a.txt").read_text() == "a-v1"

        # files: the same volume name is fine in another pool
        f = restore(d, "files", "files", "a.txt", "--set", set_id, "--as", "shares/files", "--pool", "spare")
        assert f["result"]["ok"], f
        assert (spare / "shares/files/a.txt").read_text() == "a-v1"

        r = cli(d.state_dir, "restore", "resource", "web", "--set", set_id, "--pool", "nope")
        assert r.returncode != 0 and "node local has no pool 'nope' (its pools: main, spare)" in r.stderr
        r = cli(
            d.state_dir,
            "restore",
            "resource",
            "web",
            "--set",
            set_id,
            "--over-source",
            "--yes",
            "--pool",
            "spare",
        )
        assert r.returncode == 2 and "--pool places a new copy" in r.stderr
        assert (pool / "vms/web/disk0/disk.img").read_text() == "disk0-v2"
        # a tenant may restore its resources to new copies, but not pick the pool they fill
        own = snap(d, "resource:web")
        acme = ("--token", TOKEN_ACME)
        r = cli(d.state_dir, "restore", "resource", "web", "--set", own, "--pool", "spare", *acme)
        assert r.returncode != 0 and "cannot choose the pool of a new copy" in r.stderr, r.stderr
        assert not (spare / "vms/web_restored_3").exists()
