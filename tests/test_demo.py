"""`okvqa-k8s demo`, shortened: the README's first command end to end on a smaller synthetic dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert set(tuned["per_category"]) == {"Other"}
    # The untrained tiny model answers nothing right; 10 epochs on 130 questions already teach colours.
    assert tuned["overall"] >= base["overall"] + 20.0, (base["overall"], tuned["overall"])
    assert (Path(report["report_dir"]) / "changed.html").is_file()
    assert "| **overall** |" in proc.stdout
