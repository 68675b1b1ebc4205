"""Scoring predictions against OK-VQA annotations: overall and per-category VQA accuracy.

The figures are rounded like the official script (percent, two decimals) and every figure carries the
number of questions behind it, because a per-category accuracy over 7 questions means little; a result
names the metric version that produced it (`metric`), because the two disagree on single answers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from okvqa_k8s.data.categories import category_name
from okvqa_k8s.data.okvqa import Question, join_questions, load_json
from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.metric import DEFAULT_METRIC, Metric, vqa_accuracy


def load_predictions(path: Path) -> dict[int, str]:
    """Read JSON lines `{"question_id": int, "answer": str}`; a duplicate or malformed line is an error."""
    preds: dict[int, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        qid = item.get("question_id") if isinstance(item, dict) else None
        answer = item.get("answer") if isinstance(item, dict) else None
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise UserError(f"{path}:{n}: 'question_id' missing or not an integer")
        if not isinstance(answer, str):
            raise UserError(f"{path}:{n}: 'answer' missing or not a string")
        if qid in preds:
            raise UserError(f"{path}:{n}: question_id {qid} predicted twice")
        preds[qid] = answer
    return preds


def _pct(values: Sequence[float]) -> float:
    return round(100.0 * sum(values) / len(values), 2) if values else 0.0


def score_questions(
    preds: Mapping[int, str],
    questions: Sequence[Question],
    source: str = "predictions",
    trained: Sequence[str] | None = None,
    metric: Metric = DEFAULT_METRIC,
) -> dict[str, Any]:
    """VQA accuracy (`metric`) of `preds` over exactly `questions`; a missing or unknown id is an error.

    With `trained` (category codes the model was fine-tuned on), the result also says which categories
    those are and pools the questions into two groups, `trained` and `untrained`: each group's accuracy
    is the mean over its own questions (question-weighted, as `overall`), None when it has none.
    """
    wanted = {q.question_id for q in questions}
    unknown = sorted(set(preds) - wanted)
    if unknown:
        raise UserError(
            f"{source}: question_id {unknown[0]} is not in the questions file ({len(unknown)} unknown id(s))"
        )
    missing = sorted(wanted - set(preds))
    if missing:
        raise UserError(f"{source}: no prediction for question_id {missing[0]} ({len(missing)} missing)")
    overall: list[float] = []
    per_cat: dict[str, list[float]] = defaultdict(list)
    per_type: dict[str, list[float]] = defaultdict(list)
    per_group: dict[str, list[float]] = {"trained": [], "untrained": []}
    for q in questions:
        acc = vqa_accuracy(preds[q.question_id], q.answers, metric)
        overall.append(acc)
        per_cat[category_name(q.category)].append(acc)
        per_type[q.answer_type].append(acc)
        if trained is not None:
            per_group["trained" if q.category in trained else "untrained"].append(acc)
    result: dict[str, Any] = {
        "metric": metric,
        "overall": _pct(overall),
        "count": len(overall),
        "per_category": {k: {"accuracy": _pct(v), "count": len(v)} for k, v in sorted(per_cat.items())},
        "per_answer_type": {k: {"accuracy": _pct(v), "count": len(v)} for k, v in sorted(per_type.items())},
    }
    if trained is not None:
        names = {category_name(code) for code in trained}
        result["trained_categories"] = sorted(names)
        result["groups"] = {
            group: {
                "accuracy": _pct(accs) if accs else None,
                "count": len(accs),
                "categories": sorted(n for n in per_cat if (n in names) == (group == "trained")),
            }
            for group, accs in per_group.items()
        }
    return result


def load_questions(questions_path: Path, annotations_path: Path) -> list[Question]:
    """Joined questions of an official-format pair; any bad record is an error here (no skipping)."""
    qs, bad = join_questions(
        Path(questions_path),
        Path(annotations_path),
        load_json(Path(questions_path)),
        load_json(Path(annotations_path)),
    )
    if bad:
        raise bad[0]
    return qs


def score_predictions(
    preds: Mapping[int, str],
    questions_path: Path,
    annotations_path: Path,
    metric: Metric = DEFAULT_METRIC,
) -> dict[str, Any]:
    """Score predictions against an official question + annotation file pair."""
    return score_questions(preds, load_questions(questions_path, annotations_path), metric=metric)
