"""Where a run's files live under its `outputUri`: the one place that names them.

Training writes these files, the operator and the local executor read them, the evaluation Job uploads
beside them and `submit` stages the dataset there; a name spelt on both sides could drift apart, so
every side asks this module. (Kubernetes object names live in `okvqa_k8s.kube.names`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from okvqa_k8s.storage.shards import PREPARED_MANIFEST  # `data prepare`'s manifest.json
from okvqa_k8s.storage.uri import join

__all__ = ["PREPARED_MANIFEST"]  # and the names below

if TYPE_CHECKING:
    from okvqa_k8s.spec import FineTuneSpec

PROGRESS = "progress.json"  # step/total/loss, rewritten while training; the operator's progress column
METRICS = "metrics.json"
COMPLETE = "_COMPLETE"  # written last: everything else of the run's training output is there
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MERGED = "merged"  # the merged model every server loads
TENSORBOARD = "tensorboard"
EVAL = "eval"
RESULTS = "results.json"
DATASET = "dataset"  # where `submit` stages a local dataset directory
# The evaluation set `data prepare` writes inside a dataset (and `data stage` uploads beside it, a staged
# dataset of its own): evaluation.datasetUri's default is <dataset.uri>/eval.
EVAL_SET = "eval"
EVAL_SET_STAGED = "eval-dataset"  # where `submit` stages a local evaluation.datasetUri given explicitly


def node_marker(node: int) -> str:
    """The marker one node writes into a checkpoint after uploading its own files."""
    return f"{COMPLETE}.node-{node}"


def node_markers(nodes: int) -> tuple[str, ...]:
    """Every node's marker: a checkpoint counts only when all of them are there."""
    return tuple(node_marker(i) for i in range(nodes))


def is_marker(name: str) -> bool:
    """A completion marker (the run's or a node's), never part of a checkpoint's own files."""
    return name.startswith(COMPLETE)


def progress_uri(spec: FineTuneSpec) -> str:
    return join(spec.output_uri, PROGRESS)


def checkpoints_uri(spec: FineTuneSpec) -> str:
    return join(spec.output_uri, CHECKPOINTS)


def model_uri(spec: FineTuneSpec) -> str:
    """Where training leaves the merged model (what vLLM and the built-in server load)."""
    return join(spec.output_uri, MERGED)


def eval_uri(spec: FineTuneSpec) -> str:
    """Where the evaluation Job uploads its --out directory (predictions, results, compare report)."""
    return join(spec.output_uri, EVAL)


def result_uri(spec: FineTuneSpec, variant: Literal["finetuned", "base"]) -> str:
    """results.json of one scored model: `eval run --compare` writes finetuned/ and base/ subdirectories."""
    if variant == "base" or spec.evaluation.baseline:
        return join(eval_uri(spec), variant, RESULTS)
    return join(eval_uri(spec), RESULTS)


def dataset_uri(spec: FineTuneSpec) -> str:
    return join(spec.output_uri, DATASET)


def eval_dataset_uri(spec: FineTuneSpec) -> str:
    """The prepared evaluation set the evaluation Job scores: explicit, or the one inside the dataset."""
    return spec.evaluation.dataset_uri or join(spec.dataset.uri, EVAL_SET)


def staged_eval_dataset_uri(spec: FineTuneSpec) -> str:
    return join(spec.output_uri, EVAL_SET_STAGED)
