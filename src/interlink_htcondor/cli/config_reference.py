"""``interlink-htcondor config-reference``: the configuration reference
(``docs/configuration.md``), generated from the settings model.

The reference is derived from :mod:`interlink_htcondor.settings` alone, so it cannot drift
from what the plugin accepts: every key with its type, default, environment variable and
description, then a complete YAML file of the defaults (``--yaml`` prints only that).
Regenerate it with::

    interlink-htcondor config-reference -o docs/configuration.md

``--check FILE`` exits 1 when FILE differs from what would be generated (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from interlink_htcondor.settings import ENV_PREFIX, Settings

GENERATOR = "interlink-htcondor config-reference -o docs/configuration.md"


@dataclass(frozen=True)
class Key:
    """One documented configuration key."""

    path: str  # dotted, e.g. ``server.port``; ``[]`` marks list items
    type: str
    default: str  # rendered, or "required"
    env: str  # environment variable, or "" for keys inside list items
    description: str


def describe_type(annotation: Any) -> str:
    """A short human name for a field type (``integer``, ``list of string``, ...)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (list, tuple, set, frozenset, Sequence):
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {describe_type(args[0])} to {describe_type(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"{annotation.__name__} (see below)"
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation in simple:
        return simple[annotation]
    return getattr(annotation, "__name__", str(annotation))


def describe_constraints(field: FieldInfo) -> str:
    """Bounds from ``Field(ge=..., min_length=...)`` as text, e.g. ``>= 1, <= 64``."""
    parts: list[str] = []
    for item in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{sign} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            parts.append(f"length >= {item.min_length}")
        if isinstance(item, annotated_types.MaxLen):
            parts.append(f"length <= {item.max_length}")
    return ", ".join(parts)


def default_value(field: FieldInfo) -> tuple[bool, Any]:
    """``(has_default, JSON-compatible default)``; never reads the environment."""
    if field.is_required():
        return False, None
    value = field.get_default(call_default_factory=True)
    annotation = field.annotation if field.annotation is not None else Any
    return True, TypeAdapter(annotation).dump_python(value, mode="json")


def render_default(name: str, field: FieldInfo) -> str:
    has, value = default_value(field)
    if not has:
        return "required"
    text = f"`{json.dumps(value)}`"
    # Permission bits read better in octal; YAML (and the plugin) take the decimal form too.
    if name.endswith("_mode") and isinstance(value, int) and not isinstance(value, bool):
        text += f" (octal `{value:#o}`)"
    return text


def _inner_models(annotation: Any) -> Iterator[type[BaseModel]]:
    """Models nested in a field type (``list[ImageRule]`` yields ``ImageRule``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _inner_models(arg)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def model_keys(model: type[BaseModel], prefix: str, env_prefix: str | None) -> list[Key]:
    """Keys of ``model`` under ``prefix``; ``env_prefix`` None means "inside a list item"."""
    keys: list[Key] = []
    for name, field in model.model_fields.items():
        kind = describe_type(field.annotation)
        bounds = describe_constraints(field)
        if bounds:
            kind += f" ({bounds})"
        keys.append(
            Key(
                path=f"{prefix}{name}",
                type=kind,
                default=render_default(name, field),
                env="" if env_prefix is None else f"{env_prefix}{name.upper()}",
                description=_clean(field.description),
            )
        )
    return keys


@dataclass(frozen=True)
class Section:
    title: str
    doc: str
    keys: list[Key]


def sections(settings: type[BaseModel] = Settings) -> list[Section]:
    """The settings model as documented sections, in declaration order."""
    out: list[Section] = []
    top_level: list[Key] = []
    for name, field in settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            env = f"{ENV_PREFIX}{name.upper()}__"
            doc = _clean(field.description or annotation.__doc__)
            out.append(Section(f"`{name}`", doc, model_keys(annotation, f"{name}.", env)))
            out.extend(_item_sections(annotation, f"{name}."))
        else:
            top_level.extend(_top_level_key(name, field))
    if top_level:
        out.insert(0, Section("Top-level keys", "", top_level))
    return out


def _top_level_key(name: str, field: FieldInfo) -> list[Key]:
    kind = describe_type(field.annotation)
    return [
        Key(
            name,
            kind,
            render_default(name, field),
            f"{ENV_PREFIX}{name.upper()}",
            _clean(field.description),
        )
    ]


def _item_sections(model: type[BaseModel], prefix: str) -> list[Section]:
    """One section per model used inside a list or map field (e.g. image rules)."""
    out: list[Section] = []
    for name, field in model.model_fields.items():
        for inner in _inner_models(field.annotation):
            if inner is field.annotation:
                continue  # a plain nested section would be documented by its parent
            item_prefix = f"{prefix}{name}[]."
            doc = _clean(inner.__doc__) or f"Each entry of `{prefix}{name}`."
            out.append(
                Section(f"`{prefix}{name}[]` entries", doc, model_keys(inner, item_prefix, None))
            )
            out.extend(_item_sections(inner, item_prefix))
    return out


def example_yaml(settings: type[BaseModel] = Settings) -> str:
    """A complete YAML config of the defaults, each key preceded by its description."""
    lines: list[str] = []
    for name, field in settings.model_fields.items():
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            lines.extend(_yaml_key(name, sub_field=field, indent=""))
            continue
        lines.append(f"{name}:")
        for key, sub in annotation.model_fields.items():
            lines.extend(_yaml_key(key, sub_field=sub, indent="  "))
    return "\n".join(lines) + "\n"


def _yaml_key(name: str, *, sub_field: FieldInfo, indent: str) -> list[str]:
    out = [f"{indent}# {line}" for line in _wrap(_clean(sub_field.description), 92)]
    has, value = default_value(sub_field)
    if not has:
        out.append(f"{indent}# {name}: (required)")
        return out
    dumped = yaml.safe_dump({name: value}, default_flow_style=False, sort_keys=False, width=1000)
    out.extend(f"{indent}{line}" for line in dumped.rstrip("\n").splitlines())
    return out


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.replace("\\|", "|").split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


def render_markdown(settings: type[BaseModel] = Settings) -> str:
    """The whole configuration reference as Markdown."""
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from the settings model by `{GENERATOR}`. Do not edit. -->",
        "",
        "The plugin reads one YAML file (`interlink-htcondor serve --config FILE`). Every key is",
        "optional; a key that is not listed here is an error, so typos fail at start-up instead",
        "of being ignored. Environment variables override the file: the section and key in",
        f"upper case, joined by `__`, after the prefix `{ENV_PREFIX}` (for example",
        f"`{ENV_PREFIX}SCHEDD__COLLECTOR=cm.example.org`). Lists and maps given through the",
        "environment are JSON, for example",
        f"`{ENV_PREFIX}STORAGE__HOST_PATH_ALLOW='[\"/cvmfs\"]'`.",
        "",
        "The Helm chart renders this same file from its `config` value, and the systemd unit",
        "reads it from `/etc/interlink-htcondor/config.yaml`; see [the admin guide](admin.md).",
        "",
    ]
    for section in sections(settings):
        out += [f"## {section.title}", ""]
        if section.doc:
            out += [section.doc, ""]
        with_env = any(k.env for k in section.keys)
        columns = ["Key", "Type", "Default"] + (["Environment variable"] if with_env else [])
        columns.append("Description")
        out += [_row(columns), _row(["---"] * len(columns))]
        for k in section.keys:
            cells = [f"`{k.path}`", k.type, k.default] + ([f"`{k.env}`"] if with_env else [])
            out.append(_row([*cells, k.description]))
        out.append("")
    out += [
        "## Complete example with the defaults",
        "",
        "Every key at its default value. Copy what you need; keys left out keep these values.",
        "",
        "```yaml",
        example_yaml(settings).rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(out)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = "Print the configuration reference generated from the settings model."
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    group.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE is stale")
    group.add_argument("--yaml", action="store_true", help="print only the YAML example")


def run(args: argparse.Namespace, name: str) -> int:
    text = example_yaml() if args.yaml else render_markdown()
    if args.check is not None:
        try:
            current = args.check.read_text(encoding="utf-8")
        except OSError as e:
            print(f"{args.check}: {e.strerror}", file=sys.stderr)
            return 1
        if current != text:
            print(f"{args.check} is stale; regenerate it with: {GENERATOR}", file=sys.stderr)
            return 1
        return 0
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
