"""Fuzz the config loader: thousands of deterministic mutations of config.example.yaml.

Whatever the mutation (lines deleted, duplicated, swapped or re-indented; scalars replaced by other
types, huge or negative numbers, unicode or nothing; keys renamed to near misses; random bytes;
truncation), `validate_file` must return either [] or problems that each name a position as
`file:line:col: path: message` — never raise, never report an internal error, never hang.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.config_loader import validate_file
from tests.helpers import RECONCILER, ROOT, cli

EXAMPLE = (ROOT / "config.example.yaml").read_text()
LINE_RE = re.compile(r"^.+:\d+:\d+: .+: .+")
SEED = 20261126
MUTANTS = 3000

# fmt: off
SCALARS = [
    "", "~", "null", "true", "no", "0", "-1", "-999999999999", "1e400", "-1e400", ".inf", "-.inf", ".nan",
    "99999999999999999999999999999999999999", "0x7fffffffffffffff", "0o777", "1_000", "3.5", "-0.0",
    "[]", "{}", "[1, 2, [3]]", "{a: 1, b: [x]}", '""', "''", '"\\u0000"', '"\\x85"', "ünïcødé", "名前",
    "\u202eevil", "😀", "a" * 5000, "2026-13-45", "2026-02-30T25:61", "12:34:56", "5 parsecs", "-5m",
    "0s", "1y1y1y", "forever", "!!binary aGVsbG8=", "!!python/object:os.system ls", "!!set {a}",
    "*undefined_alias", "&anchor value", "? complex key", "|\n  block", ">-", "- item", "key: value",
    "{{ jinja }}", "${ENV}", "%TAG", "@reserved", "`tick`", "'unterminated", '"unterminated', "#",
    "../../../../etc/passwd", "/dev/zero", "~root/x",
]
# fmt: on
KEY_RE = re.compile(r"^(\s*-?\s*)([A-Za-z_][A-Za-z0-9_-]*)(\s*:)(.*)$")
RAW_BYTES = [
    b"\x00",
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\x1b[31m",
    b"\t",
    b"\r",
    b"\x85",
    b"\xe2\x80\xa8",
    b"\x7f",
]


def _near_miss(key: str, rng: random.Random) -> str:
    ops: list[Callable[[str], str]] = [
        lambda k: k[:-1] or "x",  # drop the last char
        lambda k: k + rng.choice("sz_-"),
        lambda k: k.upper(),
        lambda k: k.replace("_", "-") if "_" in k else k + "_",
        lambda k: (k[1] + k[0] + k[2:]) if len(k) > 1 else k + k,  # swap the first two
        lambda k: k[: len(k) // 2] + rng.choice("aeiou") + k[len(k) // 2 + 1 :],
    ]
    return rng.choice(ops)(key)


def mutate(text: str, rng: random.Random) -> bytes:
    lines = text.split("\n")
    live = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]

    def pick() -> int:
        return rng.choice(live) if live and rng.random() < 0.9 else rng.randrange(len(lines))

    insert_raw = False
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not lines:
            lines = [""]
        kind = rng.randrange(9)
        i = min(pick(), len(lines) - 1)
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[i])
        elif kind == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 3:
            stripped = lines[i].lstrip(" ")
            indent = len(lines[i]) - len(stripped)
            new = rng.choice([0, max(0, indent - 1), indent + 1, indent + 2, max(0, indent - 2), indent + 7])
            lines[i] = ("\t" if rng.random() < 0.1 else "") + " " * new + stripped
        elif kind == 4:
            m = KEY_RE.match(lines[i])
            value = rng.choice(SCALARS)
            if m:
                lines[i] = f"{m.group(1)}{m.group(2)}{m.group(3)} {value}"
            else:
                lines[i] = lines[i] + value
        elif kind == 5:
            m = KEY_RE.match(lines[i])
            if m:
                lines[i] = f"{m.group(1)}{_near_miss(m.group(2), rng)}{m.group(3)}{m.group(4)}"
        elif kind == 6:
            col = rng.randrange(len(lines[i]) + 1)
            junk = "".join(
                chr(rng.choice([0, 7, 9, 0x1F, 0x85, 0xA0, 0x2028, 0xFEFF, 0xD7FF, 0x10FFFF]))
                for _ in range(3)
            )
            lines[i] = lines[i][:col] + junk + lines[i][col:]
        elif kind == 7:
            insert_raw = True  # bytes that need not be UTF-8: inserted after the text edits
        else:
            cut = rng.randrange(len("\n".join(lines)) + 1)
            lines = "\n".join(lines)[:cut].split("\n")
    data = "\n".join(lines).encode()
    if insert_raw:
        pos = rng.randrange(len(data) + 1)
        data = data[:pos] + rng.choice(RAW_BYTES) + data[pos:]
    return data


def check(errors: object, filename: str) -> None:
    assert isinstance(errors, list)
    for e in errors:
        assert isinstance(e, str)
        assert LINE_RE.match(e), f"no position: {e!r}"
        assert e.startswith(filename + ":"), e
        assert "internal error" not in e, e
        assert "\n" not in e, e


def test_example_is_valid() -> None:
    assert validate_file(ROOT / "config.example.yaml") == []


def test_thousands_of_mutations_never_crash_and_always_name_a_position(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    target = tmp_path / "config.yaml"
    invalid = 0
    slowest = 0.0
    kept: list[tuple[bytes, list[str]]] = []
    for n in range(MUTANTS):
        data = mutate(EXAMPLE, rng)
        target.write_bytes(data)
        t0 = time.monotonic()
        try:
            errors = validate_file(target)
        except BaseException as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutation #{n} raised {type(exc).__name__}: {exc}\n--- input ---\n{data[:3000]!r}")
        slowest = max(slowest, time.monotonic() - t0)
        try:
            check(errors, str(target))
        except AssertionError as exc:
            pytest.fail(f"mutation #{n}: {exc}\n--- input ---\n{data[:3000]!r}")
        invalid += bool(errors)
        if errors and len(kept) < 3 and n % 7 == 0:
            kept.append((data, errors))
    # the mutations must be doing something: most of them break the config
    assert invalid > MUTANTS // 2, invalid
    assert slowest < 10.0, f"one validation took {slowest:.1f}s (a pathological input?)"
    # the CLI says the same as the function, with exit code 1 (what Ansible's `validate:` needs)
    for i, (data, errors) in enumerate(kept[:2]):
        path = tmp_path / f"kept-{i}.yaml"
        path.write_bytes(data)
        r = cli(tmp_path, "validate", str(path), timeout=60)
        assert r.returncode == 1, r
        assert r.stderr.splitlines()[:-1] == [e.replace(str(target), str(path)) for e in errors]
        assert r.stderr.splitlines()[-1] == f"{path}: {len(errors)} error(s)"


def test_cli_on_binary_garbage_and_unreadable_paths(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(random.Random(SEED).randrange(256) for _ in range(4096)))
    for path in (garbage, tmp_path / "missing.yaml", tmp_path):
        r = subprocess.run(
            [*RECONCILER, "validate", str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert r.returncode == 1, r
        assert "Traceback" not in r.stderr
        check(r.stderr.splitlines()[:-1], str(path))
