"""Config reference tables generated from the config classes, so README.md never restates them by hand.

One markdown table per stage config (key | type | default | description), nested sections walked with dotted
keys; the description is the field's ``Field(description=...)``. README.md holds each table between
``<!-- config:NAME:start -->`` and ``<!-- config:NAME:end -->``; regenerate them in place with

    python -m wildreward.config_docs --write README.md

``--check README.md`` exits 1 (with a diff) when a table is stale; ``tests/test_config_docs.py`` does the same in
the fast lane. ``python -m wildreward.config_docs [NAME ...]`` prints tables.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from wildreward.config import Section

REGENERATE = "python -m wildreward.config_docs --write README.md"

# name -> (class as "module:Class", nested sections listed as one row instead of expanded: they have their own table)
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "labeller": ("wildreward.extract.classifier:LabellerConfig", ("train",)),
    "extract": ("wildreward.extract.config:ExtractConfig", ()),
    "train": ("wildreward.train.config:TrainConfig", ()),
    "eval": ("wildreward.eval.config:EvalConfig", ()),
    "users-scaling": ("wildreward.eval.users:UsersScalingConfig", ()),
    "ablation": ("wildreward.eval.ablation:AblationConfig", ("extract", "train", "eval")),
    "serve": ("wildreward.serve.config:ServeConfig", ()),
    "dpo": ("wildreward.dpo.config:DPOConfig", ()),
    "pipeline": ("wildreward.pipeline:PipelineConfig", ("labeller", "extract", "train", "eval", "serve", "dpo")),
}

MARKER = re.compile(r"<!-- config:(?P<name>[\w-]+):(?P<end>start|end) -->")


def config_class(name: str) -> type[Section]:
    module, _, cls = TABLES[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


# ---------------------------------------------------------------- cells

def _inline(text: str) -> str:
    """One table cell: one line, pipes escaped, ``<`` escaped outside code spans (``<output_dir>`` would be an
    HTML tag), reST double backticks as markdown code."""
    text = " ".join(text.replace("``", "`").split())
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;")
    return "`".join(parts).replace("|", "\\|")


def _value(value: Any) -> str:
    """A default as it is written in the YAML configs."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return re.sub(r"e([-+])0*(\d)", r"e\1\2", repr(value)).replace("e+", "e")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and (value == "" or value != value.strip()):
        return repr(value)
    return str(value)


def _bounds(field: FieldInfo) -> str:
    signs = {annotated_types.Ge: ("≥", "ge"), annotated_types.Gt: (">", "gt"),
             annotated_types.Le: ("≤", "le"), annotated_types.Lt: ("<", "lt")}
    out = []
    for item in field.metadata:
        if type(item) in signs:
            sign, attr = signs[type(item)]
            out.append(f"{sign} {_value(getattr(item, attr))}")
    return ", ".join(out)


def _type(annotation: Any, bounds: str = "") -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(f"`{_value(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a, bounds if a is not type(None) else "") for a in args)
    suffix = f" {bounds}" if bounds else ""
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type(a) for a in args)}]{suffix}" if args else name + suffix
    return getattr(annotation, "__name__", str(annotation)) + suffix


def _default(field: FieldInfo) -> str:
    """The class default. A default computed by a named function (a path that depends on the machine) is
    described by the function's docstring, so the table is the same everywhere."""
    factory = field.default_factory
    if factory is not None and not isinstance(factory, type) and getattr(factory, "__name__", "<lambda>") != "<lambda>":
        doc = inspect.getdoc(factory)
        return _inline(doc.split("\n\n")[0]) if doc else f"`{factory.__name__}()`"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    return f"`{_inline(_value(value))}`" if not isinstance(value, Section) else ""


def _flat(section: Section, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, Section):
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def _section_field(field: FieldInfo) -> type[Section] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, Section) else None


# ---------------------------------------------------------------- tables

def rows(cls: type[Section], collapse: tuple[str, ...] = (), *, _prefix: str = "",
         _instance: Section | None = None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every leaf field of ``cls``, nested sections as dotted keys.
    ``_instance``: the enclosing section's default, when it differs from ``cls()`` (a default_factory)."""
    out = []
    for name, field in cls.model_fields.items():
        key = _prefix + name
        sub = _section_field(field)
        value = getattr(_instance, name) if _instance is not None else field.get_default(call_default_factory=True)
        if sub is not None:
            instance = value if value != sub() else None
            if key in collapse:
                owner = next((t for t in TABLES if config_class(t) is sub), None)
                changed = {k: v for k, v in _flat(value).items() if _flat(sub()).get(k, object()) != v}
                default = ", ".join(f"`{k}: {_inline(_value(v))}`" for k, v in changed.items())
                description = field.description or (f"the `{owner}` config (its own table)" if owner else "")
                out.append((f"`{key}`", sub.__name__, default, _inline(description)))
            else:
                out.extend(rows(sub, collapse, _prefix=key + ".", _instance=instance))
            continue
        if _instance is not None and value != field.get_default(call_default_factory=True):
            default = f"`{_inline(_value(value))}`"
        else:
            default = _default(field)
        out.append((f"`{key}`", _inline(_type(field.annotation, _bounds(field))), default,
                    _inline(field.description or "")))
    return out


def render_table(cls: type[Section], collapse: tuple[str, ...] = ()) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(cls, collapse)]
    return "\n".join(lines) + "\n"


def render(name: str) -> str:
    """The table of ``TABLES[name]``."""
    return render_table(config_class(name), TABLES[name][1])


# ---------------------------------------------------------------- README

def blocks(text: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of every generated block: the text between a start marker's line end and its end
    marker. Raises ValueError on unknown names, unpaired or nested markers."""
    found, open_ = [], None
    for m in MARKER.finditer(text):
        name = m.group("name")
        if name not in TABLES:
            raise ValueError(f"unknown config table {name!r} in a marker (known: {', '.join(TABLES)})")
        if m.group("end") == "start":
            if open_ is not None:
                raise ValueError(f"config:{open_[0]}:start has no end marker before config:{name}:start")
            open_ = (name, m.end())
        else:
            if open_ is None or open_[0] != name:
                raise ValueError(f"config:{name}:end without its start marker")
            found.append((name, open_[1], m.start()))
            open_ = None
    if open_ is not None:
        raise ValueError(f"config:{open_[0]}:start has no end marker")
    return found


def update(text: str) -> str:
    """``text`` with every generated block replaced by the table it names."""
    out, pos = [], 0
    for name, start, end in blocks(text):
        out += [text[pos:start], "\n", render(name)]
        pos = end
    return "".join(out) + text[pos:]


def stale_diff(path: str | Path) -> str:
    """A unified diff of ``path``'s generated blocks against the current tables; empty when they are current."""
    text = Path(path).read_text(encoding="utf-8")
    return "".join(difflib.unified_diff(text.splitlines(keepends=True), update(text).splitlines(keepends=True),
                                        fromfile=f"{path} (now)", tofile=f"{path} (generated)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wildreward.config_docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"tables to print (default: all): {', '.join(TABLES)}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="regenerate FILE's marked tables in place")
    group.add_argument("--check", metavar="FILE", help="exit 1 with a diff when FILE's marked tables are stale")
    args = parser.parse_args(argv)
    if args.write:
        path = Path(args.write)
        text = path.read_text(encoding="utf-8")
        new = update(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
        print(f"{path}: {len(blocks(new))} config tables, {'updated' if new != text else 'already current'}")
        return 0
    if args.check:
        diff = stale_diff(args.check)
        if diff:
            print(diff + f"\n{args.check} has stale config tables: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    unknown = [n for n in args.names if n not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown} (known: {', '.join(TABLES)})")
    for name in args.names or TABLES:
        print(f"{name} ({TABLES[name][0]}):\n\n{render(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
