"""Regenerate the committed gRPC code from proto/ into reconciler/v1/ (or into --out for the staleness test)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out: Path) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "reconciler" / "v1").glob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out / "reconciler" / "v1" / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC code. Do not edit: run `make proto`."""\n')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT)
    ns = parser.parse_args()
    generate(ns.out)
    print(f"generated into {ns.out / 'reconciler' / 'v1'}", file=sys.stderr)


if __name__ == "__main__":
    main()
