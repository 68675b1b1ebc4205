"""Every command a user can run answers --help, and user errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from okvqa_k8s.cli import cli, main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


@pytest.mark.parametrize("path", _commands(cli), ids=lambda p: " ".join(p) or "okvqa-k8s")
def test_every_command_has_help(path: tuple[str, ...], capsys) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: okvqa-k8s")
    assert len(out.splitlines()) > 3


def test_console_script_is_installed_and_fast_to_start() -> None:
    """`okvqa-k8s --help` must not import torch (it runs in the slim operator image too)."""
    code = "import sys; from okvqa_k8s.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_usage_error_exit_code(capsys) -> None:
    assert main(["data", "prepare"]) == 2
    assert "Missing argument" in capsys.readouterr().err


def test_dev_cluster_names_the_missing_test_environment(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """okvqa-k8s does not ship its test environment: without it, `dev cluster up` says how to get it."""
    monkeypatch.setitem(sys.modules, "okvqa_testenv", None)  # makes `import okvqa_testenv` fail
    assert main(["dev", "cluster", "up"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "okvqa-k8s-testenv" in err and "pip install -e ./testenv" in err
