"""Where the test environment finds its binaries and the pinned helm/kubectl (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from okvqa_testenv import paths


def test_tools_dir_follows_the_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OKVQA_TOOLS_DIR", str(tmp_path / "tools"))
    assert paths.tools_bin_dir() == tmp_path / "tools" / "bin"
    monkeypatch.delenv("OKVQA_TOOLS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert paths.tools_bin_dir() == tmp_path / "cache" / "okvqa-k8s" / "tools" / "bin"
    pinned = paths.tools_bin_dir() / "helm"
    pinned.parent.mkdir(parents=True)
    pinned.write_text("#!/bin/sh\n")
    pinned.chmod(0o755)
    assert paths.find_tool("helm") == str(pinned)
    monkeypatch.setenv("PATH", "")
    assert paths.find_tool("no-such-tool-okvqa") is None
