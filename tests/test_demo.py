"""`okvqa-k8s demo`, shortened: the README's first command end to end on a smaller synthetic dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from okvqa_k8s.data.categories import CATEGORIES
from tests.conftest import REPO


@pytest.mark.slow
def test_demo_trains_serves_and_reports_a_gain(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "okvqa_k8s.cli", "demo", "--workdir", str(tmp_path / "demo"), "--size", "400"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report_path = Path(proc.stdout.strip().splitlines()[-1])  # the last line is the report's path
    assert report_path == tmp_path / "demo" / "report.json"
    report = json.loads(report_path.read_text())
    base, tuned = report["base"], report["finetuned"]
    assert base["count"] == tuned["count"] > 0
    # Trained on Other, evaluated on all eleven categories of the evaluation set `data prepare` wrote,
    # with the question counts of its files.
    evalset = tmp_path / "demo" / "dataset" / "eval"
    annotations = json.loads((evalset / "val_annotations.json").read_text())["annotations"]
    in_files = Counter(CATEGORIES[a["question_type"]] for a in annotations)
    manifest = json.loads((evalset / "manifest.json").read_text())
    assert len(in_files) == 11 and manifest["counts"]["val"]["per_category"] == dict(in_files)
    for result in (base, tuned):
        assert {name: c["count"] for name, c in result["per_category"].items()} == dict(in_files)
        assert result["count"] == len(annotations)
    assert report["trained_categories"] == ["Other"]
    trained, untrained = report["groups"]["trained"], report["groups"]["untrained"]
    assert trained["count"] == in_files["Other"] and trained["categories"] == ["Other"]
    assert untrained["count"] == len(annotations) - in_files["Other"] and len(untrained["categories"]) == 10
    # The untrained tiny model answers nothing right; 10 epochs on 130 questions already teach colours.
    assert trained["finetuned"] >= trained["base"] + 20.0, trained
    # Both lines in the before/after table the demo prints.
    assert report["summary"]["trained"].startswith("trained categories: Δ +")
    assert report["summary"]["untrained"].endswith(f" pp on {untrained['count']} questions")
    assert report["summary"]["trained"] in proc.stdout and report["summary"]["untrained"] in proc.stdout
    assert "| Other | ✓ | " in proc.stdout and "| **overall** |" in proc.stdout
    # the figures name the metric that produced them: the current official one, by default
    assert report["metric"] == base["metric"] == tuned["metric"] == "official"
    assert "(metric official, percent)" in proc.stdout and "· metric: official" in proc.stdout
    html = (Path(report["report_dir"]) / "changed.html").read_text()
    assert all(f"<h2>{name}" in html for name in CATEGORIES.values())
