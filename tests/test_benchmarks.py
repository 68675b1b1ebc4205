"""The staging benchmark still runs end to end (a tiny workload; no timing is asserted, only that every
step ran, was charged CPU on both sides, and that the report is complete)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_staging_benchmark_reports_every_step_with_cpu_on_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "staging.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "benchmarks/staging.py", "--files", "40", "--file-size", "20KB", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["files"] == 40 and report["endpoint"] == "moto"
    assert set(report["costs"]) == {"a_up", "a_down", "b_up", "b_down"}
    for cost in report["costs"].values():  # CPU seconds tick in 10 ms: a tiny step may show 0
        assert cost["wall"] > 0 and cost["client_cpu"] >= 0 and cost["server_cpu"] >= 0
    assert sum(cost["server_cpu"] for cost in report["costs"].values()) > 0  # the server was measured
    assert set(report["speedup"]) == set(report["best_possible_speedup"]) == {"upload", "download"}
    assert "speed-up (b)/(a)" in result.stdout
