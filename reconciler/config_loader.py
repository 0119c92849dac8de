"""Read a config file and report every problem at once as `FILE:LINE:COL: dotted.path: message`.

ruamel.yaml is used only to read: its round-trip loader keeps the line/column of every mapping key
and sequence item. The tree is converted to plain Python data (for pydantic) plus a side table
{path: position}, so any error that names a path can be pointed at a line.

The loader must turn *any* input into either a Config or a ConfigError: it is the gate in front of a
running daemon and of Ansible's `validate:`. Hence the size limits, the event guard that refuses
deep nesting and alias bombs while ruamel composes (its composer recurses and would hit Python's
recursion limit), and the last-resort handler.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.parser import RoundTripParser
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import Scanner

from reconciler.config import Config, Loc, Problem, apply_defaults, check_config
from reconciler.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
# The deepest legitimate path is ~6 levels (offsite.targets.X.windows[0].days[0]); ruamel's
# recursive composer fails somewhere past 300.
MAX_DEPTH = 64

ROOT = "<root>"
_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+\Z")
_SECTIONS = ("nodes", "tenants", "resources", "profiles", "system_snapshots")

Pos = tuple[int, int]  # 0-based (line, col), as ruamel keeps them


class _Fatal(Exception):
    """Stop reading: the document cannot be processed further (too big, too deep)."""

    def __init__(self, pos: Pos, path: Loc, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.path = path
        self.message = message


@dataclass
class _Doc:
    """Plain data plus where each piece came from."""

    data: Any = None
    value_pos: dict[Loc, Pos] = field(default_factory=dict)
    key_pos: dict[Loc, Pos] = field(default_factory=dict)
    # (position, path, message) found while converting; pydantic does not report those paths again
    problems: list[tuple[Pos, Loc, str]] = field(default_factory=list)
    reported: set[Loc] = field(default_factory=set)
    nodes: int = 0


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem."""
    path = Path(path)
    text = _read_file(path)
    config = parse_config(text, filename=str(path), base_dir=path.parent.absolute())
    config._source_path = path.absolute()
    return config


def parse_config(text: str, *, filename: str, base_dir: Path) -> Config:
    """Validate config text; relative paths in it resolve against base_dir."""
    return _guarded(filename, lambda: _parse(text, filename, base_dir))


M = TypeVar("M", bound=BaseModel)


def load_model(path: Path, model: type[M]) -> M:
    """Any pydantic model from a YAML file, with the same positioned errors (e.g. the agent's
    config). Relative paths resolve against the file's directory. Raises ConfigError."""
    path = Path(path)
    text = _read_file(path)
    return parse_model(text, model, filename=str(path), base_dir=path.parent.absolute())


def parse_model(text: str, model: type[M], *, filename: str, base_dir: Path) -> M:
    return _guarded(filename, lambda: _parse_model(text, model, filename, base_dir))


def _guarded(filename: str, fn: Callable[[], M]) -> M:
    try:
        return fn()
    except ConfigError:
        raise
    except Exception as e:  # a bug here must still come out as a config error, never a traceback
        message = " ".join(f"internal error while validating ({type(e).__name__}: {e})".split())
        raise ConfigError([_line(filename, (0, 0), (), message)]) from e


def _read_file(path: Path) -> str:
    filename = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(
            [_line(filename, (0, 0), (), f"cannot read the config file: {e.strerror or e}")]
        ) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([_line(filename, (0, 0), (), "the config file is larger than 1 MiB")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n")
        col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace"))
        raise ConfigError(
            [_line(filename, (line, col), (), f"not valid UTF-8 (byte 0x{raw[e.start]:02x})")]
        ) from None


def validate_file(path: Path | str) -> list[str]:
    """Every problem of a config file as `file:line:col: path: message`; [] when valid."""
    try:
        load_config(Path(path))
    except ConfigError as e:
        return list(e.errors)
    return []


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def format_path(path: Loc) -> str:
    if not path:
        return ROOT
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"  # quoted, so dots or newlines in a key stay unambiguous
    return out


def _line(filename: str, pos: Pos, path: Loc, message: str) -> str:
    message = " ".join(message.split()) or "invalid"
    return f"{filename}:{pos[0] + 1}:{pos[1] + 1}: {format_path(path)}: {message}"


# ---------------------------------------------------------------------------------------------
# Reading YAML
# ---------------------------------------------------------------------------------------------


def _mark_pos(mark: Any) -> Pos:
    line = getattr(mark, "line", 0)
    col = getattr(mark, "column", 0)
    return (line if isinstance(line, int) else 0, col if isinstance(col, int) else 0)


def _index_pos(text: str, index: int) -> Pos:
    index = max(0, min(index, len(text)))
    before = text[:index]
    return before.count("\n"), index - (before.rfind("\n") + 1)


def _yaml_error(text: str, e: Exception) -> tuple[Pos, str]:
    if isinstance(e, DuplicateKeyError):
        m = re.search(r'found duplicate key "(.*?)" with value', str(e.problem or ""), re.S)
        key = m.group(1) if m else "?"
        first = f" (first defined on line {e.context_mark.line + 1})" if e.context_mark is not None else ""
        return _mark_pos(e.problem_mark), f"duplicate key {key!r}{first}"
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark if e.problem_mark is not None else e.context_mark
        problem = e.problem or e.context or str(e)
        if e.context and e.problem:
            problem = f"{e.problem} ({e.context})"
        return _mark_pos(mark), f"YAML syntax error: {problem}"
    if isinstance(e, ReaderError):
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        return _index_pos(text, e.position), f"YAML syntax error: character {char} is not allowed"
    return (0, 0), f"YAML error: {e}"


class _Frame:
    __slots__ = ("is_map", "path", "in_key", "keys", "want_key", "key", "index")

    def __init__(self, is_map: bool, path: Loc, in_key: bool) -> None:
        self.is_map = is_map
        self.path = path
        self.in_key = in_key  # this container is (inside) a mapping key: `? {a: b}`
        self.keys: dict[str, int] = {}  # key -> 0-based line where it first appeared
        self.want_key = True
        self.key: str = "?"
        self.index = 0

    def advance(self) -> None:
        if self.is_map:
            self.want_key = not self.want_key
        else:
            self.index += 1


class _EventGuard:
    """Watches the parser's events as ruamel's composer consumes them, to refuse documents that
    are too deep (the composer recurses) or too large *before* they are built, and to find every
    duplicate key with its path (ruamel stops at the first one and knows no path)."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.count = 0
        self.duplicates: list[tuple[Pos, Loc, str]] = []

    def see(self, event: Any) -> None:
        stack = self.stack
        if isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            if stack:
                stack.pop()
            if stack:
                stack[-1].advance()
            return
        if isinstance(event, DocumentEndEvent):
            if self.duplicates:
                raise _Duplicates(self.duplicates)
            return
        if not isinstance(event, (ScalarEvent, AliasEvent, MappingStartEvent, SequenceStartEvent)):
            return  # stream and document boundaries
        pos = _mark_pos(event.start_mark)
        parent = stack[-1] if stack else None
        path: Loc
        if parent is None:
            path = ()
        elif parent.is_map:
            path = parent.path if parent.want_key else (*parent.path, parent.key)
        else:
            path = (*parent.path, parent.index)
        self.count += 1
        if self.count > MAX_NODES:
            raise _Fatal(pos, path, f"more than {MAX_NODES} YAML nodes")
        if parent is not None and parent.is_map and parent.want_key:
            if isinstance(event, ScalarEvent):
                key = str(event.value)
                if key in parent.keys and key != "<<":
                    first = parent.keys[key] + 1
                    self.duplicates.append(
                        (pos, (*parent.path, key), f"duplicate key (first defined on line {first})")
                    )
                else:
                    parent.keys[key] = pos[0]
                parent.key = key
            else:
                parent.key = "?"  # a complex key; reported as "keys must be strings" later
        if isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise _Fatal(pos, path[:8], f"nested deeper than {MAX_DEPTH} levels")  # path shortened
            in_key = parent is not None and (parent.in_key or (parent.is_map and parent.want_key))
            if in_key and parent is not None and parent.in_key:
                # a container inside a complex key: ruamel cannot even build it (unhashable)
                raise _Fatal(
                    pos, path, "mapping keys must be strings, got a key with a nested mapping or list"
                )
            stack.append(_Frame(isinstance(event, MappingStartEvent), path, in_key))
        elif parent is not None:
            parent.advance()


class _GuardedParser(RoundTripParser):
    """ruamel's round-trip parser, with every event shown to an _EventGuard on its way to the
    composer (one pass over the text instead of a separate pre-scan)."""

    def __init__(self, loader: Any) -> None:
        super().__init__(loader)
        self.guard = _EventGuard()

    def get_event(self) -> Any:
        event = super().get_event()
        self.guard.see(event)
        return event


def _read_yaml(text: str) -> Any:
    try:
        return _load_yaml(text, comments=True)
    except AssertionError:
        # ruamel's comment bookkeeping asserts on some odd but valid layouts (a comment on the
        # indicator line of a top-level block scalar); comments mean nothing to the config, so
        # the text is read again without them and gets the usual errors, with positions
        return _load_yaml(text, comments=False)


def _load_yaml(text: str, *, comments: bool) -> Any:
    y = YAML(typ="rt")
    y.Parser = _GuardedParser
    if not comments:
        y.Scanner = Scanner
    with warnings.catch_warnings():
        # ruamel warns (rather than fails) on e.g. reused anchors; they are not config problems
        warnings.simplefilter("ignore")
        return y.load(text)


class _Duplicates(Exception):
    def __init__(self, problems: list[tuple[Pos, Loc, str]]) -> None:
        super().__init__("duplicate keys")
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# ruamel tree -> plain data + positions
# ---------------------------------------------------------------------------------------------


def _lc(obj: Any, kind: str, key: Any) -> Pos | None:
    try:
        lc = obj.lc
        raw = lc.key(key) if kind == "key" else lc.value(key) if kind == "value" else lc.item(key)
        line, col = raw[0], raw[1]
    except Exception:  # merged (<<) keys and aliased nodes have no position of their own
        return None
    if isinstance(line, int) and isinstance(col, int):
        return (line, col)
    return None


def _is_container(v: Any) -> bool:
    return isinstance(v, (CommentedMap, CommentedSeq, dict, list))


def _convert(doc: _Doc, node: Any, path: Loc, pos: Pos, depth: int) -> tuple[bool, Any]:
    """(ok, plain value). Not ok: the problem is recorded and the caller drops the entry."""
    doc.nodes += 1
    if doc.nodes > MAX_NODES:
        # aliases reuse nodes, so the expanded tree can be far bigger than the text
        raise _Fatal(pos, path, f"more than {MAX_NODES} YAML nodes (after expanding aliases)")
    if depth > 2 * MAX_DEPTH:
        raise _Fatal(pos, path, f"nested deeper than {2 * MAX_DEPTH} levels (after expanding aliases)")
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key in list(node.keys()):
            key_pos = _lc(node, "key", key) or pos
            if isinstance(key, str):
                skey = str(key)
            elif isinstance(key, int) and not isinstance(key, bool):
                skey = str(int(key))  # `1: ...` means the name "1"
            else:
                doc.problems.append((key_pos, path, f"mapping keys must be strings, got {_describe(key)}"))
                continue
            child_path = (*path, skey)
            value = node[key]
            doc.key_pos[child_path] = key_pos
            value_pos = _lc(node, "value", key)
            # a container or an empty (null) value: the key is where a reader looks
            if _is_container(value) or value is None or value_pos is None:
                doc.value_pos[child_path] = key_pos
            else:
                doc.value_pos[child_path] = value_pos
            ok, plain = _convert(doc, value, child_path, doc.value_pos[child_path], depth + 1)
            if ok:
                out[skey] = plain
        return True, out
    if isinstance(node, list):
        items: list[Any] = []
        for i, item in enumerate(node):
            child_path = (*path, i)
            item_pos = _lc(node, "item", i) or pos
            doc.value_pos[child_path] = item_pos
            ok, plain = _convert(doc, item, child_path, item_pos, depth + 1)
            # keep indexes aligned with the file, so later errors name the right item
            items.append(plain if ok else None)
        return True, items
    scalar = _scalar(node)
    if scalar is _BAD:
        doc.problems.append((pos, path, _unsupported(node)))
        doc.reported.add(path)
        return False, None
    return True, scalar


_BAD = object()


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        if type(v).__name__ == "ScalarBoolean":
            return bool(v)
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, datetime):
        # ruamel's TimeStamp carries extra state; a plain datetime is what the models expect
        return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=v.tzinfo)
    if isinstance(v, date):
        return date(v.year, v.month, v.day)
    return _BAD


def _unsupported(v: Any) -> str:
    if isinstance(v, TaggedScalar):
        return f"the YAML tag {str(v.tag)!r} is not supported here"
    if isinstance(v, (bytes, bytearray)):
        return "binary values are not supported here"
    if isinstance(v, (set, frozenset)) or type(v).__name__ == "CommentedSet":
        return "YAML sets are not supported here; use a list"
    return f"unsupported YAML value ({type(v).__name__})"


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, (date, datetime)):
        return "a date"
    if isinstance(v, (tuple, list)):
        return "a list"
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, str):  # ruamel's block and quoted scalars are str subclasses
        return "a string"
    if isinstance(v, int):
        return "an integer"
    return type(v).__name__


# ---------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------


def _position(doc: _Doc, path: Loc, *, key: bool = False) -> Pos:
    if key and path in doc.key_pos:
        return doc.key_pos[path]
    for n in range(len(path), -1, -1):
        prefix = path[:n]
        if prefix in doc.value_pos:
            return doc.value_pos[prefix]
        if prefix in doc.key_pos:
            return doc.key_pos[prefix]
    return (0, 0)


# ---------------------------------------------------------------------------------------------
# pydantic errors -> lines
# ---------------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (types.UnionType, typing.Union):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc` (for "did you mean" hints)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            if not isinstance(part, str) or part not in fields:
                return None
            tp = fields[part].annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


_TYPE_MESSAGES = {
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "float_type": "expected a number",
}


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Loc, bool]:
    """Split a pydantic loc into the part that exists in the data (plus a missing field's name).
    Returns (path, is_key_error)."""
    path: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        if part == "[key]":
            return tuple(path), True
        if isinstance(cur, dict) and isinstance(part, str) and part in cur:
            cur = cur[part]
            path.append(part)
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
            path.append(part)
        else:
            # the first part that is not in the data: a missing field's name, or a pydantic
            # internal tag (function-after[...], a union member) that means nothing to a user
            if (
                i == len(loc) - 1
                and isinstance(cur, dict)
                and isinstance(part, str)
                and _SIMPLE_KEY.match(part)
            ):
                path.append(part)
            return tuple(path), False
    return tuple(path), False


def _show_input(v: Any) -> str:
    if isinstance(v, (dict, list)) or v is None:
        return ""
    text = repr(v)
    return f" (got {text if len(text) <= 40 else text[:37] + '...'})"


def _pydantic_lines(
    doc: _Doc, filename: str, err: ValidationError, root: type[BaseModel]
) -> tuple[list[str], set[Loc]]:
    """Error lines and the data paths they are about."""
    lines: list[str] = []
    locs: set[Loc] = set()
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        kind = e["type"]
        path, key_error = _data_path(doc.data, loc)
        locs.add(path)
        if any(path[: len(r)] == r for r in doc.reported):
            continue  # already reported while reading the YAML (unsupported tag, ...)
        if kind == "extra_forbidden":
            key = path[-1] if path else "?"
            model = _model_at(root, path[:-1])
            names = _field_names(model) if model is not None else []
            hint = ""
            if isinstance(key, str):
                close = difflib.get_close_matches(key, names, n=1)
                if close:
                    hint = f"; did you mean {close[0]!r}?"
                elif names:
                    hint = f" (allowed: {', '.join(names)})"
            message = f"unknown key {key!r}{hint}"
            lines.append(_line(filename, _position(doc, path, key=True), path, message))
            continue
        if kind == "missing":
            message = "required key is missing"
            parent = path[:-1] if path and path not in doc.value_pos else path
            lines.append(_line(filename, _position(doc, parent, key=True), path, message))
            continue
        message = str(e["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        elif message.startswith("Assertion failed, "):
            message = message[len("Assertion failed, ") :]
        if kind in _TYPE_MESSAGES:
            message = _TYPE_MESSAGES[kind]
        if kind != "value_error" and not key_error:
            message += _show_input(e.get("input"))
        lines.append(_line(filename, _position(doc, path, key=key_error), path, message))
    return lines, locs


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


def _read_document(text: str, filename: str) -> _Doc:
    """YAML text -> plain data with positions; ConfigError for anything that is not a mapping."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ConfigError([_line(filename, (0, 0), (), "the config is larger than 1 MiB")])
    try:
        tree = _read_yaml(text)
    except _Fatal as f:
        raise ConfigError([_line(filename, f.pos, f.path, f.message)]) from None
    except _Duplicates as d:
        raise ConfigError(
            [_line(filename, pos, path, message) for pos, path, message in d.problems]
        ) from None
    except RecursionError:
        raise ConfigError([_line(filename, (0, 0), (), "the document is nested too deeply")]) from None
    except (YAMLError, ValueError) as e:  # ValueError: e.g. an integer with more than 4300 digits
        pos, message = _yaml_error(text, e)
        raise ConfigError([_line(filename, pos, (), message)]) from None

    if tree is None:
        raise ConfigError(
            [
                _line(
                    filename,
                    (0, 0),
                    (),
                    "the config is empty: expected a mapping",
                )
            ]
        )
    if not isinstance(tree, CommentedMap):
        pos = _lc_root(tree)
        raise ConfigError(
            [
                _line(
                    filename,
                    pos,
                    (),
                    f"the top level must be a mapping, got {_describe(tree)}",
                )
            ]
        )

    doc = _Doc()
    doc.value_pos[()] = _lc_root(tree)
    try:
        _, doc.data = _convert(doc, tree, (), doc.value_pos[()], 0)
    except _Fatal as f:
        raise ConfigError([_line(filename, f.pos, f.path, f.message)]) from None
    return doc


def _parse_model(text: str, model: type[M], filename: str, base_dir: Path) -> M:
    doc = _read_document(text, filename)
    lines = [_line(filename, pos, p, m) for pos, p, m in doc.problems]
    try:
        result = model.model_validate(doc.data, context={"base_dir": base_dir})
    except ValidationError as e:
        lines.extend(_pydantic_lines(doc, filename, e, model)[0])
        raise ConfigError(_sorted_unique(filename, lines)) from None
    if lines:
        raise ConfigError(_sorted_unique(filename, lines))
    return result


def _parse(text: str, filename: str, base_dir: Path) -> Config:
    doc = _read_document(text, filename)
    lines = [_line(filename, pos, p, m) for pos, p, m in doc.problems]
    dropped = {p for _, p, _ in doc.problems if p in doc.reported}  # bad values, not bad keys
    context = {"base_dir": base_dir}
    data: dict[str, Any] = doc.data
    # Top-level `x-...` keys are scratch space for YAML anchors (as in docker compose files).
    for key in [k for k in data if k.startswith("x-")]:
        del data[key]
    config: Config | None = None
    salvage = _Salvage(data)
    for loc in dropped:  # entries dropped while reading: their follow-up problems are not news
        salvage.drop(loc)
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as e:
        err_lines, locs = _pydantic_lines(doc, filename, e, Config)
        lines.extend(err_lines)
        for loc in locs:
            salvage.drop(loc)
        try:
            config = Config.model_validate(salvage.finish(), context=context)
        except ValidationError:
            config = None
    if config is not None:
        for problem in check_config(config):
            if salvage.suppressed(problem):
                continue
            path = salvage.original_path(problem.path)
            lines.append(_line(filename, _position(doc, path), path, problem.message))
    if lines or config is None:
        raise ConfigError(_sorted_unique(filename, lines) or [_line(filename, (0, 0), (), "invalid config")])
    apply_defaults(config)
    return config


def _lc_root(tree: Any) -> Pos:
    try:
        return (int(tree.lc.line), int(tree.lc.col))
    except Exception:
        return (0, 0)


class _Salvage:
    """A copy of the data without the entries that failed validation.

    Validating what is left lets the cross-reference checks run in the same pass, so one typo does
    not hide every other problem. `removed` names what was dropped ((section, name), "*" = any),
    and problems that only follow from a dropped entry are not reported.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self._original = data
        self._copy: dict[str, Any] | None = None
        self.removed: set[tuple[str, str]] = set()
        # profile -> original indexes of the periods that were kept (paths must name the file's index)
        self.period_index: dict[str, list[int]] = {}
        self._dead_periods: dict[str, set[int]] = {}

    @property
    def data(self) -> dict[str, Any]:
        if self._copy is None:  # copied on the first drop: a valid config costs nothing
            self._copy = copy.deepcopy(self._original)
        return self._copy

    def _entry(self, section: str, name: str | int) -> Any:
        container = self.data.get(section)
        return container.get(name) if isinstance(container, dict) and isinstance(name, str) else None

    def _pop(self, section: str, name: str | int | None) -> None:
        container = self.data.get(section)
        if name is None or not isinstance(container, dict) or not isinstance(name, str):
            self.data.pop(section, None)  # Config gives every section a default
            self.removed.add((section, "*"))
        else:
            container.pop(name, None)
            self.removed.add((section, name))

    def drop(self, loc: Loc) -> None:
        if not loc:
            return
        section = str(loc[0])
        name = loc[1] if len(loc) >= 2 else None
        if section == "nodes" and len(loc) >= 4 and loc[2] == "pools":
            node = self._entry("nodes", loc[1])
            pools = node.get("pools") if isinstance(node, dict) else None
            if isinstance(pools, dict) and isinstance(loc[3], str):
                pools.pop(loc[3], None)
                self.removed.add(("pools", f"{loc[1]}/{loc[3]}"))
                return
        if section == "profiles" and len(loc) >= 4 and loc[2] == "periods" and isinstance(loc[3], int):
            profile = self._entry("profiles", loc[1])
            periods = profile.get("periods") if isinstance(profile, dict) else None
            if isinstance(periods, list) and 0 <= loc[3] < len(periods):
                self._dead_periods.setdefault(str(loc[1]), set()).add(loc[3])
                period = periods[loc[3]]
                pname = period.get("name") if isinstance(period, dict) else None
                self.removed.add(("periods", f"{loc[1]}/{pname if isinstance(pname, str) else '*'}"))
                return
        if section == "offsite":
            offsite = self.data.get("offsite")
            targets = offsite.get("targets") if isinstance(offsite, dict) else None
            if (
                len(loc) >= 3
                and loc[1] == "targets"
                and isinstance(targets, dict)
                and isinstance(loc[2], str)
            ):
                targets.pop(loc[2], None)
                return
            self._pop("offsite", None)
            return
        self._pop(section, name if section in _SECTIONS else None)

    def finish(self) -> dict[str, Any]:
        for pname, dead in self._dead_periods.items():
            profile = self._entry("profiles", pname)
            if not isinstance(profile, dict) or not isinstance(profile.get("periods"), list):
                continue
            periods = profile["periods"]
            keep = [i for i in range(len(periods)) if i not in dead]
            if not keep:
                self._pop("profiles", pname)  # a profile needs at least one period
                continue
            profile["periods"] = [periods[i] for i in keep]
            self.period_index[pname] = keep
        return self.data

    def original_path(self, path: Loc) -> Loc:
        if len(path) >= 4 and path[0] == "profiles" and path[2] == "periods" and isinstance(path[3], int):
            keep = self.period_index.get(str(path[1]))
            if keep is not None and path[3] < len(keep):
                return (*path[:3], keep[path[3]], *path[4:])
        return path

    def suppressed(self, problem: Problem) -> bool:
        for section, name in problem.refs:
            for rsection, rname in self.removed:
                if rsection != section:
                    continue
                if rname == name or rname == "*":
                    return True
                if name.endswith("*") and rname.startswith(name[:-1]):
                    return True
                if rname.endswith("*") and name.startswith(rname[:-1]):
                    return True
        return False


def _sorted_unique(filename: str, lines: list[str]) -> list[str]:
    """In file order, so the list reads top to bottom like the file."""

    def key(line: str) -> tuple[int, int, str]:
        m = re.match(r":(\d+):(\d+): ", line[len(filename) :])
        return (int(m.group(1)), int(m.group(2)), line) if m else (0, 0, line)

    return sorted(set(lines), key=key)


__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "format_path",
    "load_config",
    "parse_config",
    "validate_file",
]
