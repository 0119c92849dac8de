"""Restore from offsite: a set held only at the target site is fetched back, then restored."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.tlslab import LabPKI
from tests.helpers import cli, cli_json, wait_for
from tests.replication_lab import Site
from tests.test_sync_daemon import Clock, config, daemon, pki, sites  # noqa: F401 - fixtures


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_restore_from_a_set_held_only_at_the_target(
    pki: LabPKI,  # noqa: F811 - the fixture imported above
    sites: tuple[Site, Site],  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dr = sites
    with daemon(config(pki, src, dr, target={"items": []}), tmp_path / "state", Clock()) as d:
        state = d.settings.state_dir
        before = digest(src.pool / "vms/vm1")
        s1 = cli_json(state, "snapshot", "create", "resource:vm1", "--expires", "30d", "--request-id", "r1")[
            "set_id"
        ]
        assert cli(state, "sync", s1, "--target", "dr", "--wait", "--now", timeout=120).returncode == 0
        s2 = cli_json(state, "snapshot", "create", "resource:vm1", "--expires", "30d", "--request-id", "r2")[
            "set_id"
        ]
        assert cli(state, "sync", s2, "--target", "dr", "--wait", "--now", timeout=120).returncode == 0
        d.sync.run_pass()
        wait_for(
            lambda: cli(state, "snapshot", "delete", s1).returncode == 0, timeout=30, what=f"{s1} deletable"
        )
        assert s1 not in src.sets() and s1 in dr.sets()

        # without fetching it back, the set is not here
        r = cli(state, "restore", "resource", "vm1", "--set", s1, "--as", "vm1-dr")
        assert r.returncode == 3
        out = cli(
            state,
            "restore",
            "resource",
            "vm1",
            "--set",
            s1,
            "--as",
            "vm1-dr",
            "--from-target",
            "dr",
            "--json",
            timeout=180,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        restored = src.pool / "vms/vm1-dr"
        assert digest(restored) == before
        r = cli(state, "restore", "resource", "vm1", "--set", "nope", "--from-target", "dr")
        assert r.returncode == 3 and "target dr holds no set 'nope'" in r.stderr
