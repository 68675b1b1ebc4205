"""The built wheel, installed in a fresh venv and run from outside any checkout, does what the README says.

A checkout hides packaging mistakes (a module reading a file beside its source, data left out of the
wheel, the test environment shipped by accident), so this builds the wheel from a copy of the sources,
installs it with --no-deps into a new venv that sees this venv's dependencies, and runs the installed
`okvqa-k8s` from a directory that is not inside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from okvqa_k8s.chart.files import generated_files
from okvqa_k8s.kube.crd import crd_yaml
from tests.conftest import CHART_DIR, REPO

SOURCES = ("pyproject.toml", "README.md", "okvqa_k8s", "testenv", "tests")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def run(*argv: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the bin directory of a fresh venv where it is installed)."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True, ignore=JUNK)
        else:
            shutil.copy2(REPO / name, src / name)
    # No build isolation: this venv's setuptools builds the wheel, so no index is needed.
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        root / "dist",
        src,
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("okvqa_k8s-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    # The dependencies (torch among them) come from this venv's site-packages, not a second install; its
    # .pth files (the editable okvqa_k8s) are not processed from there, so the wheel's copy is the one seen.
    site = Path(
        run(
            venv / "bin" / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            cwd=root,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=root,
    )
    return wheel, venv / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the checkout (and outside any other)."""
    assert REPO not in tmp_path.parents
    return tmp_path


def test_wheel_ships_the_package_and_its_data_but_not_the_test_environment(
    installed: tuple[Path, Path],
) -> None:
    names = zipfile.ZipFile(installed[0]).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"okvqa_k8s"}
    for data in ("examples/tiny-cpu.yaml", "train/configs/zero3.json", "serve/ui.html"):
        assert f"okvqa_k8s/{data}" in names, data
    assert not [n for n in names if "okvqa_testenv" in n or n.startswith("tests/")]


def test_installed_commands_run_outside_a_checkout(installed: tuple[Path, Path], elsewhere: Path) -> None:
    okvqa = installed[1] / "okvqa-k8s"
    where = run(installed[1] / "python", "-c", "import okvqa_k8s; print(okvqa_k8s.__file__)", cwd=elsewhere)
    assert Path(where.stdout.strip()).is_relative_to(installed[1].parent), where.stdout

    assert run(okvqa, "--help", cwd=elsewhere).stdout.startswith("Usage: okvqa-k8s")
    assert run(okvqa, "crd", cwd=elsewhere).stdout == crd_yaml()
    assert (
        run(okvqa, "crd", "--check", "--chart-dir", CHART_DIR, cwd=elsewhere).stdout == "CRD is up to date\n"
    )
    current = run(okvqa, "chart", "generate", "--check", "--chart-dir", CHART_DIR, cwd=elsewhere)
    assert "generated files are current" in current.stdout

    # Without --chart-dir outside a checkout: one line saying what to pass, no traceback.
    for argv in (("crd", "--check"), ("chart", "generate", "--check")):
        lost = run(okvqa, *argv, cwd=elsewhere, check=False)
        assert lost.returncode == 2 and lost.stdout == "", lost
        (line,) = lost.stderr.splitlines()
        assert line.startswith("okvqa-k8s: error: --chart-dir: not given") and "checkout" in line


def test_installed_chart_generate_writes_what_the_checkout_has(
    installed: tuple[Path, Path], elsewhere: Path
) -> None:
    chart = elsewhere / "okvqa"
    shutil.copytree(CHART_DIR, chart)
    generated = list(generated_files(CHART_DIR))
    for rel in generated:
        (chart / rel).unlink()
    run(installed[1] / "okvqa-k8s", "chart", "generate", "--chart-dir", chart, cwd=elsewhere)
    for rel in generated:
        assert (chart / rel).read_text() == (CHART_DIR / rel).read_text(), rel
