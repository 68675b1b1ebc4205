"""The chart's README.md, generated from Chart.yaml and the `# --` comments of values.yaml (helm-docs' rule).

A value is documented by a comment block starting with `# --` right above its key; the lines of the block
that follow it continue the text. The table lists every value in file order: a map without a description
is opened up into its keys, a documented map is one row (its keys get rows of their own only when they
are documented too). Types come from the value itself, or from the values schema when it is null.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

README_FILE = "README.md"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_-]+):(\s|$)")
_COMMENT = re.compile(r"^ *#(?P<text>.*)$")
_TYPES = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    list: "list",
    dict: "object",
}
_SCHEMA_TYPES = {"integer": "int", "number": "float", "boolean": "bool", "array": "list", "null": "null"}


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: Any
    description: str


def descriptions(values_text: str) -> dict[str, str]:
    """Dotted key → the text of the `# --` block right above it."""
    found: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    block: list[str] | None = None
    for line in values_text.splitlines():
        if comment := _COMMENT.match(line):
            text = comment["text"].strip()
            if text.startswith("--"):
                block = [text[2:].strip()]
            elif block is not None:
                block.append(text)
            continue
        if key := _KEY.match(line):
            indent = len(key["indent"])
            while parents and parents[-1][0] >= indent:
                parents.pop()
            parents.append((indent, key["key"]))
            if block is not None:
                found[".".join(name for _, name in parents)] = " ".join(block)
        block = None
    return found


def rows(values_text: str, schema: Mapping[str, Any]) -> list[Row]:
    """The table's rows, in the order of values.yaml."""
    documented = descriptions(values_text)

    def walk(node: Mapping[str, Any], prefix: str, documented_only: bool) -> Iterator[Row]:
        for name, value in node.items():
            key = f"{prefix}.{name}" if prefix else name
            described, is_map = key in documented, isinstance(value, dict) and bool(value)
            if described or not (is_map or documented_only):
                yield Row(key, _type(value, key, schema), value, documented.get(key, ""))
            if is_map:
                yield from walk(value, key, documented_only or described)

    return list(walk(yaml.safe_load(values_text) or {}, "", False))


def readme_text(chart: Mapping[str, Any], values_text: str, schema: Mapping[str, Any]) -> str:
    """README.md of the chart described by `chart` (Chart.yaml) with the values of `values_text`."""
    lines = [
        f"# {chart['name']}",
        "",
        chart.get("description", "").strip(),
        "",
        f"Chart version {chart['version']}, app version {chart['appVersion']}, "
        f"Kubernetes {chart.get('kubeVersion', 'any')}.",
    ]
    requires = (chart.get("annotations") or {}).get("okvqa.dev/requires")
    if requires:
        lines += ["", f"Requires the {requires}."]
    lines += [
        "",
        "Generated from Chart.yaml and the `# --` comments of values.yaml by `okvqa-k8s chart generate`;",
        "edit those, not this file. Every value is checked by values.schema.json.",
        "",
        "## Values",
        "",
        "| Key | Type | Default | Description |",
        "|-----|------|---------|-------------|",
    ]
    for row in rows(values_text, schema):
        default = json.dumps(row.default, separators=(",", ":"))
        lines.append(f"| {row.key} | {row.type} | `{_cell(default)}` | {_cell(row.description)} |")
    return "\n".join(lines) + "\n"


def _type(value: Any, key: str, schema: Mapping[str, Any]) -> str:
    if value is not None:
        return _TYPES.get(type(value), type(value).__name__)
    node: Mapping[str, Any] = schema
    for name in key.split("."):
        node = (node.get("properties") or {}).get(name) or {}
    kinds = node.get("type", "null")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return " or ".join(_SCHEMA_TYPES.get(kind, kind) for kind in kinds)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")
