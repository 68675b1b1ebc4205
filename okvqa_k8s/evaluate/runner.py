"""`eval run`: ask a served model every question of a prepared split and score its answers.

Predictions are appended to `predictions.jsonl` one line per answered question, flushed at once, so
an interrupted evaluation (a killed pod, a lost port-forward) resumes where it stopped: a rerun skips
every answered question and a torn last line is dropped. The prompt and image of each question come
from the prepared `<split>.json` LLaVA records, turned into the text part of the request by the same
function training uses, so the model is asked exactly what it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.client import ChatClient
from okvqa_k8s.evaluate.metric import DEFAULT_METRIC, Metric, result_metric
from okvqa_k8s.fsutil import atomic_write_json, atomic_write_text
from okvqa_k8s.progress import bar

PREDICTIONS = "predictions.jsonl"
RESULTS = "results.json"
RUN = "run.json"


@dataclass(frozen=True)
class EvalItem:
    """One question as sent: the text part of the prompt and the image path inside the dataset."""

    question_id: int
    prompt: str
    image: str
    category: str


def resolve_dataset(dataset: str, cache_dir: Path | None = None) -> Path:
    """A local prepared dataset directory for `dataset` (a path, or an s3:// URI fetched once)."""
    if "://" not in dataset or dataset.startswith("file://"):
        from okvqa_k8s.storage.uri import parse

        path = Path(parse(dataset).path)
        if not path.is_dir():
            raise UserError(f"--dataset {dataset}: not a directory (expected a prepared dataset)")
        return path
    from okvqa_k8s.storage import fetch_dataset

    root = (
        cache_dir
        or Path(os.environ.get("OKVQA_SCRATCH") or Path.home() / ".cache" / "okvqa-k8s") / "datasets"
    )
    dest = root / hashlib.sha256(dataset.encode()).hexdigest()[:16]
    return Path(fetch_dataset(dataset, dest, workers=8))


def load_items(
    dataset_dir: Path, split: str, categories: list[str] | None = None, max_questions: int | None = None
) -> tuple[list[EvalItem], list[Any]]:
    """Questions of the split (optionally some categories, the first N by id) joined with their records."""
    from okvqa_k8s.data.categories import category_name
    from okvqa_k8s.data.okvqa import load_json
    from okvqa_k8s.evaluate.evalset import describe, missing_categories
    from okvqa_k8s.evaluate.score import load_questions
    from okvqa_k8s.train.data import question_text

    questions = load_questions(
        dataset_dir / f"{split}_questions.json", dataset_dir / f"{split}_annotations.json"
    )
    if categories:
        counts = Counter(q.category for q in questions)
        if missing := missing_categories(categories, counts):
            names = ", ".join(repr(category_name(code)) for code in missing)
            raise UserError(
                f"--category: no questions for {names} in {dataset_dir} (split {split}: {describe(counts)})"
            )
        questions = [q for q in questions if q.category in categories]
    questions.sort(key=lambda q: q.question_id)
    if max_questions is not None:
        questions = questions[:max_questions]
    if not questions:
        raise UserError(
            f"{dataset_dir}: split {split!r} has no questions"
            + (f" in categories {', '.join(categories)}" if categories else "")
        )
    records_path = dataset_dir / f"{split}.json"
    records = load_json(records_path)
    if not isinstance(records, list):
        raise UserError(f"{records_path}: expected a list of LLaVA records")
    by_id = {str(r.get("id")): r for r in records if isinstance(r, dict)}
    items = []
    for q in questions:
        rec = by_id.get(str(q.question_id))
        if rec is None or "image" not in rec or not rec.get("conversations"):
            raise UserError(
                f"{records_path}: no LLaVA record with image and conversations for question {q.question_id}"
            )
        items.append(EvalItem(q.question_id, question_text(rec), str(rec["image"]), q.category))
    return items, questions


def read_predictions(path: Path) -> dict[int, dict[str, Any]]:
    """Answered questions so far; a torn final line (a kill mid-write) is cut off the file."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    done: dict[int, dict[str, Any]] = {}
    good_end = 0
    for line in raw.splitlines(keepends=True):
        try:
            rec = json.loads(line)
            qid = int(rec["question_id"])
            str(rec["answer"])
        except (ValueError, KeyError, TypeError):
            if line.endswith(b"\n"):
                raise UserError(
                    f"{path}: corrupt line {line[:60]!r}; delete the file or pass --restart"
                ) from None
            break
        if not line.endswith(b"\n"):
            break
        done[qid] = rec
        good_end += len(line)
    if good_end != len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return done


def _check_resume(out_dir: Path, run: dict[str, Any], restart: bool) -> None:
    run_path = out_dir / RUN
    if restart:
        (out_dir / PREDICTIONS).unlink(missing_ok=True)
        (out_dir / RESULTS).unlink(missing_ok=True)
    elif run_path.exists() and (out_dir / PREDICTIONS).exists():
        old = json.loads(run_path.read_text(encoding="utf-8"))
        for key in ("model", "split", "categories", "max_tokens", "max_questions"):
            if old.get(key) != run.get(key):
                raise UserError(
                    f"{out_dir}: holds predictions made with {key}={old.get(key)!r}, "
                    f"this run has {run.get(key)!r}; "
                    "pass --restart to discard them or choose another --out"
                )
    atomic_write_json(run_path, run)


def results_markdown(result: dict[str, Any]) -> str:
    """The accuracy table of one result, as printed and saved next to it (trained categories marked
    when the result knows them), under the name of the metric that produced it."""
    trained = result.get("trained_categories")
    mark = (lambda name: " (trained)" if name in trained else "") if trained else (lambda name: "")
    lines = [
        f"# VQA accuracy: {result.get('model', '?')} ({result.get('split', '?')})",
        "",
        f"metric: {result_metric(result)}",
        "",
        "| category | accuracy (%) | questions |",
        "|---|---:|---:|",
    ]
    for name, cat in result["per_category"].items():
        lines.append(f"| {name}{mark(name)} | {cat['accuracy']:.2f} | {cat['count']} |")
    for group, figures in (result.get("groups") or {}).items():
        if figures["count"]:
            lines.append(f"| *{group} categories* | *{figures['accuracy']:.2f}* | *{figures['count']}* |")
    lines.append(f"| **overall** | **{result['overall']:.2f}** | **{result['count']}** |")
    return "\n".join(lines) + "\n"


def run_eval(
    client: ChatClient,
    dataset_dir: Path,
    split: str,
    out_dir: Path,
    *,
    dataset_label: str | None = None,
    categories: list[str] | None = None,
    trained: list[str] | None = None,
    concurrency: int = 8,
    max_questions: int | None = None,
    max_tokens: int = 16,
    restart: bool = False,
    metric: Metric = DEFAULT_METRIC,
) -> Path:
    """Answer every unanswered question, score all of them, write results; returns results.json.

    `trained` (category codes the model was fine-tuned on) marks those categories in the result and
    adds the trained/untrained groups; it changes no answer, so a resumed run may add it, and so may
    another `metric` (every answer is scored again).
    """
    from okvqa_k8s.evaluate.score import score_questions

    items, questions = load_items(dataset_dir, split, categories, max_questions)
    model = client.model
    out_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "endpoint": client.base,
        "model": model,
        "dataset": dataset_label or str(dataset_dir),
        "split": split,
        "categories": categories,
        "max_tokens": max_tokens,
        "max_questions": max_questions,
    }
    _check_resume(out_dir, run, restart)
    pred_path = out_dir / PREDICTIONS
    done = read_predictions(pred_path)
    todo = [it for it in items if it.question_id not in done]
    start = time.perf_counter()

    def answer(item: EvalItem) -> dict[str, Any]:
        image = (dataset_dir / item.image).read_bytes()
        ans = client.ask(image, item.prompt, max_tokens=max_tokens)
        return {
            "question_id": item.question_id,
            "answer": ans.text,
            "category": item.category,
            "image": item.image,
            "seconds": round(ans.seconds, 4),
        }

    failure: BaseException | None = None
    with (
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        open(pred_path, "a", encoding="utf-8") as fh,
        bar(total=len(items), initial=len(items) - len(todo), desc=f"eval {model}", unit="q") as progress,
    ):
        pending: set[Future[dict[str, Any]]] = set()
        queue = iter(todo)
        while True:
            while (
                failure is None and len(pending) < 2 * concurrency and (item := next(queue, None)) is not None
            ):
                pending.add(pool.submit(answer, item))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                try:
                    rec = fut.result()
                except (UserError, OSError) as exc:
                    failure = failure or exc
                    continue
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                done[rec["question_id"]] = rec
                progress.update(1)
    if failure is not None:
        raise UserError(
            f"{failure} ({len(done)}/{len(items)} questions answered and kept in {pred_path}; "
            "rerun the same command to resume)"
        )
    wanted = {q.question_id for q in questions}
    result = score_questions(
        {qid: rec["answer"] for qid, rec in done.items() if qid in wanted},
        questions,
        source=str(pred_path),
        trained=trained,
        metric=metric,
    )
    elapsed = time.perf_counter() - start
    result.update(
        {
            "model": model,
            "endpoint": client.base,
            "dataset": run["dataset"],
            "dataset_dir": str(dataset_dir.resolve()),
            "split": split,
            "categories": categories,
            "predictions": PREDICTIONS,
            "max_tokens": max_tokens,
            "answered_now": len(todo),
            "seconds": round(elapsed, 2),
            "questions_per_second": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
        }
    )
    atomic_write_text(out_dir / "results.md", results_markdown(result))
    atomic_write_json(out_dir / RESULTS, result)
    return out_dir / RESULTS
