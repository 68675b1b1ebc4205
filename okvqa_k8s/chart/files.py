"""The chart's generated files: the exact text each must have, and which ones have drifted.

These files of `charts/okvqa/` are never edited by hand, because each copies a source of truth in the
package or in the chart: `values.schema.json` (values_schema.py, with `FineTuneSpec`'s schema inside),
`files/operator-rules.yaml` (the RBAC rules the operator needs, `okvqa_k8s.kube.rbac.OPERATOR_RULES`,
which the chart's Role/ClusterRole grant verbatim) and `README.md` (readme.py, from Chart.yaml and the
`# --` comments of values.yaml). `okvqa-k8s chart generate --check` and a test fail when one has drifted.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from okvqa_k8s.chart.readme import README_FILE, readme_text
from okvqa_k8s.chart.values_schema import schema_text
from okvqa_k8s.kube.rbac import OPERATOR_RULES

SCHEMA_FILE = "values.schema.json"
RULES_FILE = "files/operator-rules.yaml"
RULES_HEADER = (
    "# Generated from okvqa_k8s/kube/rbac.py by `okvqa-k8s chart generate`; do not edit by hand.\n"
    "# The operator's Role (or ClusterRole with rbac.clusterWide) grants exactly these rules.\n"
)


def rules_text() -> str:
    return RULES_HEADER + yaml.safe_dump(list(OPERATOR_RULES), sort_keys=False, default_flow_style=False)


def generated_files(chart_dir: Path) -> dict[str, str]:
    """Relative path in the chart → the exact text it must have."""
    schema = schema_text()
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text(encoding="utf-8"))
    values = (chart_dir / "values.yaml").read_text(encoding="utf-8")
    return {
        SCHEMA_FILE: schema,
        RULES_FILE: rules_text(),
        README_FILE: readme_text(chart, values, json.loads(schema)),
    }


def drift(chart_dir: Path) -> list[str]:
    """One line per generated file that is missing or differs from what the sources generate."""
    problems = []
    for rel, text in generated_files(chart_dir).items():
        path = chart_dir / rel
        if not path.is_file():
            problems.append(f"{path}: missing; run `okvqa-k8s chart generate`")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: out of date with its sources; run `okvqa-k8s chart generate`")
    return problems
