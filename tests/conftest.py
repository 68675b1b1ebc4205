"""Shared test set-up: CPU DeepSpeed, quiet progress bars, the shared schemas beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OKVQA_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = ["tests.s3server", "tests.cluster_fixture"]

REPO = Path(__file__).resolve().parent.parent
CHART_DIR = REPO / "charts" / "okvqa"
IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, reason: str) -> None:
    """Skip where a prerequisite is missing on a user's machine, but fail in CI where it must exist."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_schemas() -> Path:
    """../shared/schemas beside the checkout (a user's clone has none: skip there, fail in CI)."""
    path = REPO.parent / "shared" / "schemas"
    require(path.is_dir(), f"{path} not found (the shared schemas live beside the project checkout)")
    return path


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic OK-VQA download per session (read-only for tests: copy before changing it)."""
    from okvqa_k8s.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "okvqa"
    synthesize(out, size=160, seed=3)
    return out


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared 'Other' dataset (synth + prepare) shared by training, storage and eval tests."""
    from okvqa_k8s.data.synth import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("prepared") / "dataset", size=240, seed=1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, prepared_dataset: Path) -> Path:
    """One toy LLaVA (tokenizer trained on the prepared dataset) for training, serving and the executor."""
    from okvqa_k8s.train.tiny import build_tiny_model, dataset_texts

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "tiny-llava", texts=dataset_texts(prepared_dataset)
    )


@pytest.fixture(scope="session")
def engine(tiny_model: Path) -> Any:
    """The tiny model loaded for serving (`LlavaEngine`), shared by the serving tests; none changes it."""
    from okvqa_k8s.serve.engine import LlavaEngine

    return LlavaEngine.load(tiny_model)
