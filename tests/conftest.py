"""Shared pytest fixtures."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# --- btrfs on a loop device ---------------------------------------------------------------------
# One 1 GiB sparse image per session (mkfs + mount cost about a second); each test gets its own
# directory on it. Tests using these fixtures skip, naming what is missing, where btrfs cannot be
# mounted (not root, no btrfs-progs, no loop devices).


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)


def _unmount(mnt: Path, image: Path) -> None:
    if _run("umount", str(mnt)).returncode != 0:
        _run("umount", "-l", str(mnt))  # last resort: detach now, the kernel finishes when idle
    # `mount -o loop` sets autoclear, but detach explicitly in case the lazy unmount kept it
    for line in _run("losetup", "-j", str(image)).stdout.splitlines():
        _run("losetup", "-d", line.split(":", 1)[0])


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The mount point of a fresh btrfs filesystem on a loop device, removed after the session."""
    if os.geteuid() != 0:
        pytest.skip("btrfs tests need root (loop devices and mount)")
    for tool in ("mkfs.btrfs", "btrfs", "mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"btrfs tests need {tool} (btrfs-progs / util-linux) on PATH")
    base = tmp_path_factory.mktemp("btrfs")
    image = base / "btrfs.img"
    mnt = base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(1 << 30)
    try:
        res = _run("mkfs.btrfs", "-q", "-f", str(image))
        if res.returncode != 0:
            pytest.skip(f"mkfs.btrfs failed: {res.stderr.strip()}")
        res = _run("mount", "-o", "loop", str(image), str(mnt))
        if res.returncode != 0:
            pytest.skip(f"loop device setup failed: {res.stderr.strip()}")
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    try:
        yield mnt
    finally:
        _unmount(mnt, image)
        image.unlink(missing_ok=True)


_dir_counter = itertools.count()


@pytest.fixture
def btrfs_dir(btrfs_mount: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh, empty directory on the session's btrfs filesystem (left there: the whole
    filesystem goes at the end of the session)."""
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:80]
    path = btrfs_mount / f"{next(_dir_counter):03d}-{name}"
    path.mkdir()
    return path
