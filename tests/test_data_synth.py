"""`data synth`: the official OK-VQA layout, deterministic, every category, answers in the pixels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from okvqa_k8s.cli import main
from okvqa_k8s.data.categories import CATEGORIES
from okvqa_k8s.data.okvqa import coco_image_name, join_questions, load_json
from okvqa_k8s.data.synth import COLOURS, synthesize


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_official_structure_and_all_categories(synth_raw: Path) -> None:
    for split in ("train", "val"):
        qdoc = load_json(synth_raw / f"OpenEnded_mscoco_{split}2014_questions.json")
        adoc = load_json(synth_raw / f"mscoco_{split}2014_annotations.json")
        assert adoc["question_types"] == CATEGORIES
        q0, a0 = qdoc["questions"][0], adoc["annotations"][0]
        assert set(q0) == {"image_id", "question", "question_id"}
        assert set(a0) >= {"question_id", "image_id", "question_type", "answers", "answer_type", "confidence"}
        assert len(a0["answers"]) == 10
        assert set(a0["answers"][0]) == {"answer", "raw_answer", "answer_confidence", "answer_id"}
        assert sorted(a["answer_id"] for a in a0["answers"]) == list(range(1, 11))
        assert {a["question_type"] for a in adoc["annotations"]} == set(CATEGORIES)
        questions, bad = join_questions(Path("q"), Path("a"), qdoc, adoc)
        assert not bad and len(questions) == len(qdoc["questions"])
        for q in questions:
            assert (synth_raw / f"{split}2014" / coco_image_name(split, q.image_id)).is_file()


def test_colour_answers_match_the_pixels(synth_raw: Path) -> None:
    """The majority answer of a colour question is the colour of the drawn shapes."""
    qdoc = load_json(synth_raw / "OpenEnded_mscoco_train2014_questions.json")
    adoc = load_json(synth_raw / "mscoco_train2014_annotations.json")
    questions, _ = join_questions(Path("q"), Path("a"), qdoc, adoc)
    checked = 0
    for q in questions:
        majority = max(set(q.answers), key=q.answers.count)
        if majority not in COLOURS:
            continue
        img = np.asarray(
            Image.open(synth_raw / "train2014" / coco_image_name("train", q.image_id)).convert("RGB")
        )
        pixels = img.reshape(-1, 3).astype(int)
        dist = {name: np.abs(pixels - np.array(rgb)).sum(axis=1) for name, rgb in COLOURS.items()}
        near = {name: int((d < 60).sum()) for name, d in dist.items()}
        assert max(near, key=near.get) == majority, (q.question, near)
        checked += 1
    assert checked >= 20


def test_deterministic_from_seed(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", size=30, seed=7)
    synthesize(tmp_path / "b", size=30, seed=7)
    synthesize(tmp_path / "c", size=30, seed=8)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_cli_refuses_existing_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "x").mkdir()
    assert main(["data", "synth", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"okvqa-k8s: error: {tmp_path / 'x'}: already exists; choose a new directory"]
    assert main(["data", "synth", str(tmp_path / "y"), "--size", "20"]) == 0
    assert (tmp_path / "y" / "mscoco_val2014_annotations.json").is_file()
