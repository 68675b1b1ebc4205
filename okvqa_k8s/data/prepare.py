"""`data prepare`: OK-VQA files + COCO images → a training-ready dataset directory.

Output (written atomically, a failed run leaves nothing):
  train.json, val.json                      LLaVA conversation records (README, Data), one per question
  {split}_questions.json / _annotations.json the same questions in the official format, for scoring
  images/                                    only the referenced images (hard links where possible)
  manifest.json                              counts, sha256 of every file, the exact inputs and options
  eval/                                      the evaluation set: the evaluation splits (all but train) of
                                             every category (--eval-category), a prepared dataset of its
                                             own laid out as above; `data stage` uploads it beside the
                                             dataset and evaluation.datasetUri defaults to it
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from okvqa_k8s import __version__
from okvqa_k8s.data.categories import CATEGORIES, category_name, in_order, resolve_categories
from okvqa_k8s.data.images import DEFAULT_MAX_PIXELS, ImageError, check_image
from okvqa_k8s.data.okvqa import BadRecord, Question, coco_image_name, join_questions, load_json
from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.metric import normalize_answer
from okvqa_k8s.fsutil import atomic_directory, atomic_write_json, sha256_file
from okvqa_k8s.layout import EVAL_SET, PREPARED_MANIFEST
from okvqa_k8s.progress import bar

PROMPT_SUFFIX = "Answer the question using a single word or phrase."
IMAGE_TOKEN = "<image>"
ANSWER_MODES = ("most_common", "all")
MANIFEST_FORMAT = "okvqa-k8s/prepared-dataset/v1"


def questions_file(source: Path, split: str) -> Path:
    return source / f"OpenEnded_mscoco_{split}2014_questions.json"


def annotations_file(source: Path, split: str) -> Path:
    return source / f"mscoco_{split}2014_annotations.json"


def human_turn(question: str) -> str:
    """The seed's prompt: the image token once, the question, the short-answer instruction."""
    return f"{IMAGE_TOKEN}\n{question}\n{PROMPT_SUFFIX}"


def answer_targets(answers: tuple[str, ...], mode: str) -> list[str]:
    """Training answers after VQA normalisation: the most frequent (ties → first given) or all distinct.

    Counter preserves first-insertion order and `most_common` is stable, so ties resolve to the answer
    that annotators gave first — the same result on every machine.
    """
    normalized = [a for a in (normalize_answer(x) for x in answers) if a]
    if not normalized:
        return []
    counts = Counter(normalized)
    if mode == "all":
        return list(counts)
    return [counts.most_common(1)[0][0]]


def llava_records(q: Question, image_rel: str, mode: str) -> list[dict[str, Any]]:
    """One record per target answer, in the exact layout the original LLaVA training code reads."""
    targets = answer_targets(q.answers, mode)
    return [
        {
            "id": str(q.question_id) if len(targets) == 1 else f"{q.question_id}_{k}",
            "image": image_rel,
            "conversations": [
                {"from": "human", "value": human_turn(q.question)},
                {"from": "gpt", "value": target},
            ],
        }
        for k, target in enumerate(targets)
    ]


@dataclass(frozen=True)
class Kept:
    """One question that passed every check, with its LLaVA records and its image."""

    question: Question
    records: list[dict[str, Any]]
    image: str  # output name under images/
    source: Path


@dataclass
class SplitResult:
    kept: list[Kept] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # "category" when the question had one
    questions_doc: dict[str, Any] = field(default_factory=dict)  # the inputs as read, for the subsets
    annotations_doc: dict[str, Any] = field(default_factory=dict)

    def only(self, codes: list[str]) -> SplitResult:
        """The same split restricted to some categories (a skipped question of no known category stays)."""
        return SplitResult(
            kept=[k for k in self.kept if k.question.category in codes],
            skipped=[s for s in self.skipped if s.get("category") in (None, *codes)],
            questions_doc=self.questions_doc,
            annotations_doc=self.annotations_doc,
        )

    @property
    def questions(self) -> list[Question]:
        return [k.question for k in self.kept]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for k in self.kept for r in k.records]

    @property
    def images(self) -> dict[str, Path]:
        """Output name → source path, each image once (images are shared between questions)."""
        return {k.image: k.source for k in self.kept}


def _resolve_image(images_root: Path, split: str, image_id: int) -> Path:
    """COCO layout path of an image, refusing anything (e.g. a symlink) that leads out of the folder."""
    candidate = images_root / f"{split}2014" / coco_image_name(split, image_id)
    resolved = candidate.resolve()
    if not resolved.is_relative_to(images_root.resolve()):
        raise ImageError(f"path escapes the image folder {images_root}")
    return candidate


def _prepare_split(
    source: Path, images_root: Path, split: str, codes: list[str], mode: str, skip_bad: bool, max_pixels: int
) -> SplitResult:
    qpath, apath = questions_file(source, split), annotations_file(source, split)
    qdoc, adoc = load_json(qpath), load_json(apath)
    questions, bad = join_questions(qpath, apath, qdoc, adoc)
    result = SplitResult(questions_doc=qdoc, annotations_doc=adoc)
    for record in bad:
        if not skip_bad:
            raise UserError(f"{record} (use --skip-bad to skip such questions)")
        result.skipped.append({"question_id": record.question_id, "reason": str(record)})

    image_ok: dict[int, str | None] = {}  # image_id → error (None when fine); images are shared
    wanted = [q for q in questions if q.category in codes]
    for q in bar(wanted, desc=f"{split}: check images", unit="img"):
        try:
            if IMAGE_TOKEN in q.question:
                raise BadRecord(f"{qpath}: question {q.question_id}: text contains {IMAGE_TOKEN}")
            if not answer_targets(q.answers, mode):
                raise BadRecord(
                    f"{apath}: question {q.question_id}: every answer is empty after normalisation"
                )
            if q.image_id not in image_ok:
                try:
                    path = _resolve_image(images_root, split, q.image_id)
                    check_image(path, max_pixels)
                    image_ok[q.image_id] = None
                except ImageError as exc:
                    image_ok[q.image_id] = str(exc)
            name = coco_image_name(split, q.image_id)
            if image_ok[q.image_id] is not None:
                where = images_root / f"{split}2014" / name
                raise BadRecord(f"{where}: {image_ok[q.image_id]} (question {q.question_id})")
        except BadRecord as exc:
            if not skip_bad:
                raise UserError(f"{exc} (use --skip-bad to skip such questions)") from None
            skip = {"question_id": q.question_id, "category": q.category, "reason": str(exc)}
            result.skipped.append(skip)
            continue
        source = images_root / f"{split}2014" / name
        result.kept.append(Kept(q, llava_records(q, f"images/{name}", mode), name, source))
    return result


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no extra disk for 20 GB of COCO) and fall back to a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _subset_docs(result: SplitResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """The official question/annotation documents restricted to the kept questions, other keys intact."""
    keep = {q.question_id for q in result.questions}
    qdoc, adoc = result.questions_doc, result.annotations_doc
    qdoc = {**qdoc, "questions": [q for q in qdoc["questions"] if q.get("question_id") in keep]}
    adoc = {**adoc, "annotations": [a for a in adoc["annotations"] if a.get("question_id") in keep]}
    adoc.setdefault("question_types", CATEGORIES)
    return qdoc, adoc


def _write_dataset(
    root: Path,
    results: dict[str, SplitResult],
    source: Path,
    images_root: Path,
    options: dict[str, Any],
    exclude: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Records, official subsets, linked images and manifest.json of one dataset into `root` (which
    exists); files under `exclude` (a nested dataset with its own manifest) are not listed."""
    (root / "images").mkdir()
    images = {name: src for r in results.values() for name, src in r.images.items()}
    with bar(total=len(images), desc=f"link images ({root.name})", unit="img") as progress:
        for name, src in images.items():
            _link_or_copy(src, root / "images" / name)
            progress.update(1)
    counts: dict[str, Any] = {}
    for split, r in results.items():
        atomic_write_json(root / f"{split}.json", r.records)
        qdoc, adoc = _subset_docs(r)
        atomic_write_json(root / f"{split}_questions.json", qdoc)
        atomic_write_json(root / f"{split}_annotations.json", adoc)
        per_cat = Counter(category_name(q.category) for q in r.questions)
        counts[split] = {
            "questions": len(r.kept),
            "records": sum(len(k.records) for k in r.kept),
            "images": len(r.images),
            "skipped": len(r.skipped),
            "per_category": dict(sorted(per_cat.items())),
        }
    files = {
        rel: {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (rel := p.relative_to(root).as_posix()).startswith(exclude)
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "created_by": f"okvqa-k8s {__version__}",
        "inputs": {
            split: {
                "questions": {
                    "path": str(questions_file(source, split)),
                    "sha256": sha256_file(questions_file(source, split)),
                },
                "annotations": {
                    "path": str(annotations_file(source, split)),
                    "sha256": sha256_file(annotations_file(source, split)),
                },
                "images": str(images_root / f"{split}2014"),
            }
            for split in results
        },
        "options": options,
        "counts": counts,
        "skipped": {split: r.skipped for split, r in results.items() if r.skipped},
        "files": files,
        **(extra or {}),
    }
    atomic_write_json(root / PREPARED_MANIFEST, manifest)
    return manifest


def prepare_dataset(
    source: Path,
    out: Path,
    *,
    images: Path | None = None,
    categories: list[str] | None = None,
    splits: tuple[str, ...] = ("train", "val"),
    answer: str = "most_common",
    skip_bad: bool = False,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    eval_categories: list[str] | None = None,
    eval_set: bool = True,
) -> dict[str, Any]:
    """Build dataset directory `out` from OK-VQA files in `source` and COCO images; return the manifest.

    With `eval_set` (and a split other than train among `splits`), `out/eval` receives the evaluation
    set: those splits restricted to `eval_categories` (default: every category) rather than to
    `categories`, so a run trained on some categories is scored on all of them.
    """
    source, out = Path(source), Path(out)
    images_root = Path(images) if images is not None else source
    if answer not in ANSWER_MODES:
        raise UserError(f"--answer {answer!r}: expected one of {', '.join(ANSWER_MODES)}")
    codes = resolve_categories(categories or ["other"])
    eval_codes = resolve_categories(eval_categories or ["all"], "--eval-category")
    eval_splits = [split for split in splits if split != "train"] if eval_set else []
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    if not images_root.is_dir():
        raise UserError(f"{images_root}: image folder not found")

    results = {
        split: _prepare_split(
            source,
            images_root,
            split,
            in_order([*codes, *eval_codes]) if split in eval_splits else codes,
            answer,
            skip_bad,
            max_pixels,
        )
        for split in splits
    }

    def options(chosen: list[str]) -> dict[str, Any]:
        return {
            "categories": [category_name(c) for c in chosen],
            "category_codes": chosen,
            "answer": answer,
            "skip_bad": skip_bad,
            "max_pixels": max_pixels,
        }

    with atomic_directory(out, replace=overwrite) as tmp:
        nested: dict[str, Any] = {}
        if eval_splits:
            (tmp / EVAL_SET).mkdir()
            eval_results = {split: results[split].only(eval_codes) for split in eval_splits}
            eval_manifest = _write_dataset(
                tmp / EVAL_SET, eval_results, source, images_root, options(eval_codes)
            )
            nested = {
                "evaluation_set": {
                    "path": EVAL_SET,
                    "categories": eval_manifest["options"]["categories"],
                    "counts": eval_manifest["counts"],
                    "manifest_sha256": sha256_file(tmp / EVAL_SET / PREPARED_MANIFEST),
                }
            }
        manifest = _write_dataset(
            tmp,
            {split: r.only(codes) for split, r in results.items()},
            source,
            images_root,
            options(codes),
            exclude=(f"{EVAL_SET}/",),
            extra=nested,
        )
    return manifest
