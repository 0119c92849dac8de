"""The Ansible role, run for real: `ansible-playbook -i localhost, -c local` into a temporary root.

ansible-core comes from PyPI into a venv of its own (not the project's), created once and reused:
by default <repo>/.venv/ansible (so `make clean` removes it with the project venv), or the
directory named by $RECONCILER_ANSIBLE_VENV. $RECONCILER_ANSIBLE_CORE overrides the pip spec.
"""

from __future__ import annotations

import copy
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler.agent.main import AgentConfig

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
PLAYBOOK = ANSIBLE_DIR / "playbook.yml"
INVENTORY = ANSIBLE_DIR / "inventory.example.yml"
ANSIBLE_CORE = os.environ.get("RECONCILER_ANSIBLE_CORE", "ansible-core==2.19.14")
RECONCILER_BIN = Path(sys.executable).parent / "reconciler"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

_RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _ansible_venv() -> Path:
    venv = Path(os.environ.get("RECONCILER_ANSIBLE_VENV") or ROOT / ".venv" / "ansible")
    marker = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Another test session (or another engineer's) may be building it right now: take turns.
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (
            marker.exists()
            and marker.read_text() == ANSIBLE_CORE
            and (venv / "bin" / "ansible-playbook").exists()
        ):
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        res = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", ANSIBLE_CORE],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if res.returncode != 0:
            # not a skip: this test must run in CI, so a broken install is a failure to look at
            pytest.fail(f"pip install {ANSIBLE_CORE} into {venv} failed:\n{res.stdout}\n{res.stderr}")
        marker.write_text(ANSIBLE_CORE)
    return venv


def _inventory_vars() -> dict[str, Any]:
    """The example inventory's group variables: the 'good inventory' is the documented one."""
    inv = YAML(typ="safe").load(INVENTORY.read_text())
    group = inv["all"]["children"]["reconciler"]
    out = dict(group["vars"])
    agent_host = group["children"]["reconciler_agents"]["hosts"]["storage-2.example.net"]
    out["reconciler_agent_config"] = agent_host["reconciler_agent_config"]
    return out


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a CI container's uid without a passwd entry: Ansible takes the number
        return str(os.getuid())


def _group() -> str:
    try:
        return grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        return str(os.getgid())


class Deploy:
    def __init__(self, tmp: Path) -> None:
        if not RECONCILER_BIN.exists():
            pytest.fail(f"{RECONCILER_BIN} is missing: install the project into this venv (pip install -e .)")
        self.venv = _ansible_venv()
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir()
        self.runs = 0

    @property
    def config(self) -> Path:
        return self.root / "etc" / "reconciler" / "config.yaml"

    def play(self, inventory: dict[str, Any]) -> tuple[int, dict[str, int], str]:
        self.runs += 1
        test_vars = {
            "reconciler_hosts": "localhost",
            "reconciler_become": False,
            "reconciler_root": str(self.root),
            "reconciler_install": False,  # the project is already installed: use its real binary
            "reconciler_bin": str(RECONCILER_BIN),
            "reconciler_manage_service": False,  # no systemd to talk to in a test root
            "reconciler_agent_enabled": True,
            "reconciler_owner": _user(),
            "reconciler_group": _group(),
        }
        vars_file = self.tmp / f"vars-{self.runs}.json"  # JSON is YAML, and keeps types exactly
        vars_file.write_text(json.dumps({**inventory, **test_vars}))
        work = self.tmp / f"ansible-{self.runs}"
        work.mkdir()
        env = {
            "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(work),
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_HOME": str(work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(work / "local"),
            "ANSIBLE_REMOTE_TMP": str(work / "remote"),
            "ANSIBLE_PYTHON_INTERPRETER": str(self.venv / "bin" / "python"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_CONFIG": str(work / "none.cfg"),  # ignore any ansible.cfg of the machine
        }
        res = subprocess.run(
            [
                str(self.venv / "bin" / "ansible-playbook"),
                "-i",
                "localhost,",
                "-c",
                "local",
                str(PLAYBOOK),
                "-e",
                f"@{vars_file}",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        output = res.stdout + res.stderr
        m = _RECAP.search(output)
        assert m is not None, f"no play recap in the output:\n{output}"
        recap = dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()), strict=True))
        return res.returncode, recap, output


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Deploy, str]:
    d = Deploy(tmp_path_factory.mktemp("ansible"))
    rc, recap, out = d.play(_inventory_vars())
    assert rc == 0 and recap["failed"] == 0, out
    assert recap["changed"] > 0, out
    return d, out


def test_good_inventory_renders_a_valid_config(deployed: tuple[Deploy, str]) -> None:
    d, out = deployed
    assert d.config.is_file(), out
    res = subprocess.run(
        [str(RECONCILER_BIN), "validate", str(d.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # the rendered file says exactly what the inventory says, sections in the documented order
    rendered = YAML(typ="safe").load(d.config.read_text())
    inv = _inventory_vars()
    assert list(rendered) == [
        "version",
        "site",
        "nodes",
        "tenants",
        "resources",
        "profiles",
        "system_snapshots",
    ]
    for section in list(rendered)[1:]:
        assert rendered[section] == inv[f"reconciler_{section}"], section
    assert stat.S_IMODE(d.config.stat().st_mode) == 0o640
    assert stat.S_IMODE(d.config.parent.stat().st_mode) == 0o750


def test_units_agent_config_and_environment_are_installed(deployed: tuple[Deploy, str]) -> None:
    d, _ = deployed
    for unit in ("reconciler.service", "reconciler-agent.service"):
        installed = d.root / "etc" / "systemd" / "system" / unit
        assert installed.read_bytes() == (ROOT / "systemd" / unit).read_bytes()
    agent = AgentConfig.model_validate(
        YAML(typ="safe").load((d.root / "etc" / "reconciler" / "agent.yaml").read_text())
    )
    assert agent.node == "storage-2"
    assert sorted(agent.pools) == ["fast"]
    env = (d.root / "etc" / "default" / "reconciler").read_text()
    assert "RECONCILER_METRICS_ADDRESS=0.0.0.0:9479\n" in env
    assert stat.S_IMODE((d.root / "srv" / "reconciler").stat().st_mode) == 0o700


def test_second_run_changes_nothing(deployed: tuple[Deploy, str]) -> None:
    d, _ = deployed
    rc, recap, out = d.play(_inventory_vars())
    assert rc == 0 and recap["failed"] == 0, out
    assert recap["changed"] == 0, out


def _bad_unknown_key(inv: dict[str, Any]) -> str:
    inv["reconciler_resources"]["web01"]["colour"] = "red"
    return "resources.web01.colour: unknown key"


def _bad_hour(inv: dict[str, Any]) -> str:
    inv["reconciler_profiles"]["standard"]["periods"][1]["hour"] = 25
    return "profiles.standard.periods[1].hour"


def _bad_reference(inv: dict[str, Any]) -> str:
    inv["reconciler_system_snapshots"]["full"]["profile"] = "no-such-profile"
    return "system_snapshots.full.profile"


@pytest.mark.parametrize("breakage", [_bad_unknown_key, _bad_hour, _bad_reference])
def test_bad_inventory_is_refused_and_keeps_the_config(deployed: tuple[Deploy, str], breakage: Any) -> None:
    d, _ = deployed
    before = d.config.read_bytes()
    inv = copy.deepcopy(_inventory_vars())
    expected = breakage(inv)
    rc, recap, out = d.play(inv)
    assert rc != 0 and recap["failed"] == 1, out
    # refused by the validate step, with reconciler's own file:line:col: path: message
    assert "failed to validate" in out, out
    assert expected in out, out
    assert d.config.read_bytes() == before, "the previous config must stay byte for byte"
