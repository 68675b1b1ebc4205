"""What the evaluation set must hold for a run, checked before anything is created. Pure: no I/O.

A FineTune trains on `dataset.categories` and is scored on `evaluation.categories` of the evaluation set
(`evaluation.datasetUri`, by default the `eval/` that `data prepare` writes inside the dataset). A
category asked for that has no question there would only show up as a failed evaluation Job after
training; `submit` (from the manifests it can read) and the operator (before creating the PyTorchJob)
refuse the run instead, with one line naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from okvqa_k8s.data.categories import CATEGORIES, category_name

_BY_NAME = {name: code for code, name in CATEGORIES.items()}


def missing_categories(requested: Iterable[str], counts: Mapping[str, int]) -> list[str]:
    """Requested category codes with no question, in the order requested."""
    return [code for code in requested if counts.get(code, 0) <= 0]


def describe(counts: Mapping[str, int]) -> str:
    """`Other 263, Plants and Animals 20` (official order), or `no questions`."""
    parts = [f"{category_name(code)} {counts[code]}" for code in CATEGORIES if counts.get(code, 0) > 0]
    return ", ".join(parts) or "no questions"


def split_counts(manifest: Mapping[str, Any], split: str) -> dict[str, int] | None:
    """Questions per category code of one split of a `data prepare` manifest; None without that split."""
    counts = (manifest.get("counts") or {}).get(split)
    if not isinstance(counts, Mapping):
        return None
    per_category = counts.get("per_category") or {}
    return {_BY_NAME[name]: int(n) for name, n in per_category.items() if name in _BY_NAME}


def evaluation_problems(
    *,
    evaluated: list[str],
    trained: list[str],
    split: str,
    eval_uri: str,
    eval_manifest: Mapping[str, Any] | None,
    train_uri: str = "",
    train_manifest: Mapping[str, Any] | None = None,
) -> list[str]:
    """`field: what was expected` for every problem found in the manifests given (None: not read)."""
    problems = []
    if eval_manifest is not None:
        counts = split_counts(eval_manifest, split)
        if counts is None:
            have = ", ".join(sorted(eval_manifest.get("counts") or {})) or "none"
            problems.append(
                f"dataset.evalSplit: the evaluation set {eval_uri} has no {split!r} split (it has: {have})"
            )
        elif missing := missing_categories(evaluated, counts):
            names = ", ".join(repr(category_name(code)) for code in missing)
            problems.append(
                f"evaluation.categories: no questions for {names} in the evaluation set {eval_uri} "
                f"(split {split}: {describe(counts)}); prepare it with those categories "
                "(`data prepare --eval-category`) or evaluate only the categories it has"
            )
    options = (train_manifest or {}).get("options") or {}
    prepared = options.get("category_codes")
    if isinstance(prepared, list) and sorted(prepared) != sorted(trained):
        said = ", ".join(category_name(c) for c in trained)
        held = ", ".join(category_name(c) for c in prepared if c in CATEGORIES)
        problems.append(
            f"dataset.categories: {said}, but {train_uri} was prepared with {held}; set it to the "
            "categories the dataset holds (the report marks them as trained)"
        )
    return problems
