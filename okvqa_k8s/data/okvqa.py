"""Reading and checking OK-VQA question/annotation files (the official VQA JSON layout).

Every check raises a one-line `UserError` naming the file and the question at fault, because a bad
record found after hours of training is far more expensive than one found here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from okvqa_k8s.data.categories import CATEGORIES
from okvqa_k8s.errors import UserError


@dataclass(frozen=True)
class Question:
    """One OK-VQA question joined with its annotation."""

    question_id: int
    image_id: int
    question: str
    category: str  # question_type code
    answers: tuple[str, ...]
    answer_type: str


class BadRecord(UserError):
    """A single question/annotation that fails a check; `--skip-bad` skips these and counts them."""

    def __init__(self, message: str, question_id: int | None = None) -> None:
        super().__init__(message)
        self.question_id = question_id


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _list_field(doc: Any, key: str, path: Path) -> list[dict[str, Any]]:
    items = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a top-level '{key}' list (official VQA format)")
    return items


def _int_field(item: Any, key: str, path: Path, where: str) -> int:
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRecord(f"{path}: {where}: '{key}' missing or not a non-negative integer")
    return value


def join_questions(
    questions_path: Path, annotations_path: Path, questions_doc: Any, annotations_doc: Any
) -> tuple[list[Question], list[BadRecord]]:
    """Pair questions with annotations by question_id, checking every field the pipeline relies on.

    Problems with the files as a whole (missing top-level lists, duplicate ids) raise at once; problems
    with one question come back as `BadRecord`s so the caller decides between failing and skipping.
    """
    qs = _list_field(questions_doc, "questions", questions_path)
    anns = _list_field(annotations_doc, "annotations", annotations_path)

    by_id: dict[int, dict[str, Any]] = {}
    for i, ann in enumerate(anns):
        qid = _int_field(ann, "question_id", annotations_path, f"annotations[{i}]")
        if qid in by_id:
            raise UserError(f"{annotations_path}: question_id {qid} annotated twice")
        by_id[qid] = ann

    out: list[Question] = []
    bad: list[BadRecord] = []
    seen: set[int] = set()
    for i, q in enumerate(qs):
        qid = _int_field(q, "question_id", questions_path, f"questions[{i}]")
        if qid in seen:
            raise UserError(f"{questions_path}: question_id {qid} appears twice")
        seen.add(qid)
        try:
            out.append(_one(q, by_id.get(qid), qid, questions_path, annotations_path))
        except BadRecord as exc:
            exc.question_id = qid
            bad.append(exc)
    for qid in sorted(set(by_id) - seen):
        bad.append(
            BadRecord(
                f"{annotations_path}: question {qid} has an annotation but no question in "
                f"{questions_path.name}",
                qid,
            )
        )
    return out, bad


def _one(q: dict[str, Any], ann: dict[str, Any] | None, qid: int, qpath: Path, apath: Path) -> Question:
    where = f"question {qid}"
    if ann is None:
        raise BadRecord(f"{apath}: {where} (from {qpath.name}) has no annotation")
    text = q.get("question")
    if not isinstance(text, str) or not text.strip():
        raise BadRecord(f"{qpath}: {where}: 'question' missing or empty")
    image_id = _int_field(q, "image_id", qpath, where)
    if _int_field(ann, "image_id", apath, where) != image_id:
        raise BadRecord(f"{apath}: {where}: image_id differs from {qpath.name}")
    code = ann.get("question_type")
    if code not in CATEGORIES:
        raise BadRecord(
            f"{apath}: {where}: unknown question_type {code!r} (expected one of {', '.join(CATEGORIES)})"
        )
    answers = ann.get("answers")
    if not isinstance(answers, list) or not answers:
        raise BadRecord(f"{apath}: {where}: 'answers' missing or empty")
    texts = []
    for j, a in enumerate(answers):
        value = a.get("answer") if isinstance(a, dict) else None
        if not isinstance(value, str):
            raise BadRecord(f"{apath}: {where}: answers[{j}].answer missing or not a string")
        texts.append(value)
    answer_type = ann.get("answer_type", "other")
    return Question(qid, image_id, text.strip(), code, tuple(texts), str(answer_type))


def coco_image_name(split: str, image_id: int) -> str:
    """COCO 2014 file naming, e.g. COCO_val2014_000000000042.jpg."""
    return f"COCO_{split}2014_{image_id:012d}.jpg"
