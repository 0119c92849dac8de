"""Sample data for the first run (`make run`): pools with `seed_demo_data: true` get their missing
volumes created with a few files, so a newcomer sees real snapshots without preparing anything."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DISK_IMAGE_BYTES = 64 * 1024 * 1024


def seed_volume(path: Path, *, kind: str) -> None:
    """Create `path` with demo content. Never touches an existing volume."""
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.seeding")
    tmp.mkdir(parents=True, exist_ok=True)
    if kind == "vm":
        # a sparse disk image: mostly holes (zero runs), a little data, like a fresh VM disk
        with open(tmp / "disk.img", "wb") as fh:
            fh.truncate(DISK_IMAGE_BYTES)
            for i in range(16):
                fh.seek(i * (DISK_IMAGE_BYTES // 16))
                fh.write((f"block {i} of the demo disk image\n" * 2000).encode())
        (tmp / "vm.xml").write_text("<domain><name>demo</name><memory unit='MiB'>512</memory></domain>\n")
    else:
        docs = tmp / "documents"
        docs.mkdir()
        for i in range(50):
            (docs / f"report-{i:03d}.txt").write_text(
                f"quarterly report {i}\n" + "lorem ipsum dolor sit amet\n" * 200
            )
        (tmp / "README.txt").write_text("A demo NAS share created by reconciler's first run.\n")
    os.rename(tmp, path)
    log.info("created demo volume %s", path)
