"""`data prepare`: filtering, the LLaVA record format, manifest, images, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from okvqa_k8s.cli import main
from okvqa_k8s.data.categories import CATEGORIES, resolve_categories
from okvqa_k8s.data.okvqa import coco_image_name
from okvqa_k8s.data.prepare import PROMPT_SUFFIX, answer_targets, prepare_dataset
from okvqa_k8s.errors import UserError
from okvqa_k8s.fsutil import sha256_file


@pytest.fixture
def raw(synth_raw: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the synthetic OK-VQA download."""
    return Path(shutil.copytree(synth_raw, tmp_path / "raw"))


def _ann(raw: Path, split: str = "train") -> dict:
    return json.loads((raw / f"mscoco_{split}2014_annotations.json").read_text())


def _qs(raw: Path, split: str = "train") -> dict:
    return json.loads((raw / f"OpenEnded_mscoco_{split}2014_questions.json").read_text())


def _write(raw: Path, name: str, doc: dict) -> None:
    (raw / name).write_text(json.dumps(doc))


def _first_other_image(raw: Path) -> Path:
    ann = next(a for a in _ann(raw)["annotations"] if a["question_type"] == "other")
    return raw / "train2014" / coco_image_name("train", ann["image_id"])


def _prepare_fails(raw: Path, out: Path, capsys, *extra: str) -> str:
    code = main(["data", "prepare", str(raw), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not out.exists(), "a failed run must leave no dataset"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "no temp leftovers"
    return err[0]


def test_llava_records_for_other(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert main(["data", "prepare", str(raw), "--out", str(out)]) == 0
    records = json.loads((out / "train.json").read_text())
    other_ids = {a["question_id"] for a in _ann(raw)["annotations"] if a["question_type"] == "other"}
    assert {int(r["id"]) for r in records} == other_ids
    for r in records:
        # The exact layout the original LLaVA training code reads (LazySupervisedDataset).
        assert set(r) == {"id", "image", "conversations"}
        human, gpt = r["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].startswith("<image>\n") and human["value"].count("<image>") == 1
        assert human["value"].endswith("\n" + PROMPT_SUFFIX)
        assert gpt["value"] and "\n" not in gpt["value"]
        with Image.open(out / r["image"]) as img:
            img.verify()
    referenced = {
        Path(r["image"]).name
        for split in ("train", "val")
        for r in json.loads((out / f"{split}.json").read_text())
    }
    assert {p.name for p in (out / "images").iterdir()} == referenced
    src = raw / "train2014" / Path(records[0]["image"]).name
    assert (out / records[0]["image"]).stat().st_ino == src.stat().st_ino  # hard link, no copy


def test_manifest_counts_checksums_inputs(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = prepare_dataset(raw, out, categories=["other", "Plants and Animals"])
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    # eval/ is the evaluation set, a dataset of its own with its own manifest
    assert set(manifest["files"]) == {f for f in files if not f.startswith("eval/")}
    for rel, meta in manifest["files"].items():
        assert sha256_file(out / rel) == meta["sha256"]
    counts = manifest["counts"]["train"]
    assert set(counts["per_category"]) == {"Other", "Plants and Animals"}
    assert (
        sum(counts["per_category"].values())
        == counts["questions"]
        == len(json.loads((out / "train.json").read_text()))
    )
    assert manifest["options"]["category_codes"] == ["eight", "other"]
    qfile = raw / "OpenEnded_mscoco_train2014_questions.json"
    assert manifest["inputs"]["train"]["questions"] == {"path": str(qfile), "sha256": sha256_file(qfile)}
    # The official-format subsets score exactly the prepared questions.
    subset = json.loads((out / "val_annotations.json").read_text())
    assert {a["question_type"] for a in subset["annotations"]} <= {"other", "eight"}
    assert len(subset["annotations"]) == manifest["counts"]["val"]["questions"]


def test_evaluation_set_has_every_category_of_the_val_split(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = prepare_dataset(raw, out)  # trained on Other, evaluated on everything
    ev = json.loads((out / "eval" / "manifest.json").read_text())
    val = _ann(raw, "val")["annotations"]
    per_name: dict[str, int] = {}
    for a in val:
        per_name[CATEGORIES[a["question_type"]]] = per_name.get(CATEGORIES[a["question_type"]], 0) + 1
    assert set(ev["counts"]) == {"val"} and ev["counts"]["val"]["per_category"] == dict(
        sorted(per_name.items())
    )
    assert len(per_name) == 11 and ev["options"]["category_codes"] == list(CATEGORIES)
    assert {int(r["id"]) for r in json.loads((out / "eval" / "val.json").read_text())} == {
        a["question_id"] for a in val
    }
    assert len(json.loads((out / "eval" / "val_annotations.json").read_text())["annotations"]) == len(val)
    files = {p.relative_to(out / "eval").as_posix() for p in (out / "eval").rglob("*") if p.is_file()}
    assert set(ev["files"]) == files - {"manifest.json"}
    assert not (out / "eval" / "train.json").exists()
    # the training set itself is unchanged: Other only, and it records where its evaluation set is
    assert set(manifest["counts"]["val"]["per_category"]) == {"Other"}
    assert manifest["evaluation_set"]["path"] == "eval"
    assert manifest["evaluation_set"]["counts"] == ev["counts"]
    assert manifest["evaluation_set"]["manifest_sha256"] == sha256_file(out / "eval" / "manifest.json")
    # the same image in both is a hard link to the same source file
    image = next((out / "images").glob("COCO_val2014_*"))
    assert (out / "eval" / "images" / image.name).stat().st_ino == image.stat().st_ino


def test_evaluation_set_options(raw: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(["data", "prepare", str(raw), "--out", str(tmp_path / "a"), "--eval-category", "eight,ten"]) == 0
    )
    out = capsys.readouterr().out
    assert "eval/val: " in out
    ev = json.loads((tmp_path / "a" / "eval" / "manifest.json").read_text())
    assert set(ev["counts"]["val"]["per_category"]) == {"Plants and Animals", "Weather and Climate"}
    assert main(["data", "prepare", str(raw), "--out", str(tmp_path / "b"), "--no-eval-set"]) == 0
    assert not (tmp_path / "b" / "eval").exists()
    assert "evaluation_set" not in json.loads((tmp_path / "b" / "manifest.json").read_text())
    prepare_dataset(raw, tmp_path / "c", splits=("train",))  # no evaluation split, no evaluation set
    assert not (tmp_path / "c" / "eval").exists()
    err = _prepare_fails(raw, tmp_path / "d", capsys, "--eval-category", "twelve")
    assert err == (
        "okvqa-k8s: error: --eval-category 'twelve': unknown category (expected a code one..ten/other, "
        "a name such as 'Plants and Animals', or 'all')"
    )


@pytest.mark.parametrize(
    ("given", "codes"),
    [
        (["other"], ["other"]),
        (["eight", "Weather and Climate"], ["eight", "ten"]),
        (["brands-companies-and-products,ONE"], ["one", "two"]),
        (["all"], ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "other"]),
    ],
)
def test_category_spellings(given: list[str], codes: list[str]) -> None:
    assert resolve_categories(given) == codes


def test_unknown_category_and_code_rejected(raw: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match="'eleven': unknown category"):
        resolve_categories(["eleven"])
    doc = _ann(raw)
    doc["annotations"][0]["question_type"] = "twelve"
    _write(raw, "mscoco_train2014_annotations.json", doc)
    err = _prepare_fails(raw, tmp_path / "ds", capsys, "--category", "all")
    assert "mscoco_train2014_annotations.json" in err and "unknown question_type 'twelve'" in err


def test_answer_targets_normalised_majority_and_ties() -> None:
    assert answer_targets(("Two",) * 3 + ("2",) * 2 + ("three",) * 4 + ("x",), "most_common") == ["2"]
    assert answer_targets(("dog", "cat", "cat", "dog"), "most_common") == ["dog"]  # tie → first given
    assert answer_targets(("A dog.", "dog", "cat"), "all") == ["dog", "cat"]


def test_answer_all_emits_one_record_per_distinct_answer(raw: Path, tmp_path: Path) -> None:
    prepare_dataset(raw, tmp_path / "ds", answer="all")
    records = json.loads((tmp_path / "ds" / "train.json").read_text())
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    assert any("_" in i for i in ids)  # synthetic annotators disagree sometimes


def test_missing_and_extra_question_ids(raw: Path, tmp_path: Path, capsys) -> None:
    doc = _ann(raw)
    dropped = doc["annotations"].pop(0)
    _write(raw, "mscoco_train2014_annotations.json", doc)
    err = _prepare_fails(raw, tmp_path / "ds", capsys, "-c", "all")
    assert f"question {dropped['question_id']}" in err and "has no annotation" in err

    qdoc = _qs(raw)
    qdoc["questions"] = [q for q in qdoc["questions"] if q["question_id"] != dropped["question_id"]]
    removed = qdoc["questions"].pop(0)
    _write(raw, "OpenEnded_mscoco_train2014_questions.json", qdoc)
    doc["annotations"].append(dropped)
    _write(raw, "mscoco_train2014_annotations.json", doc)
    err = _prepare_fails(raw, tmp_path / "ds", capsys, "-c", "all")
    assert f"question {dropped['question_id']} has an annotation but no question" in err
    assert removed  # the other direction was exercised above


@pytest.mark.parametrize("field", ["question", "image_id"])
def test_missing_question_field(raw: Path, tmp_path: Path, capsys, field: str) -> None:
    doc = _qs(raw)
    qid = doc["questions"][3]["question_id"]
    del doc["questions"][3][field]
    _write(raw, "OpenEnded_mscoco_train2014_questions.json", doc)
    err = _prepare_fails(raw, tmp_path / "ds", capsys, "-c", "all")
    assert "OpenEnded_mscoco_train2014_questions.json" in err and f"question {qid}" in err and field in err


def test_missing_answers_field(raw: Path, tmp_path: Path, capsys) -> None:
    doc = _ann(raw)
    del doc["annotations"][2]["answers"][4]["answer"]
    _write(raw, "mscoco_train2014_annotations.json", doc)
    err = _prepare_fails(raw, tmp_path / "ds", capsys, "-c", "all")
    assert "answers[4].answer missing" in err


def _corrupt(kind: str, path: Path, outside: Path) -> None:
    if kind == "missing":
        path.unlink()
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not an image":
        path.write_text("<html>not a jpeg</html>")
    elif kind == "bomb":
        path.unlink()
        Image.new("1", (9000, 9000)).save(path, format="PNG")  # 81 Mpx, a few KB on disk
    elif kind == "escape":
        shutil.copy(path, outside)
        path.unlink()
        path.symlink_to(outside)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "image file is missing"),
        ("truncated", "truncated"),
        ("not an image", "not an image"),
        ("bomb", "decompression bomb"),
        ("escape", "escapes the image folder"),
    ],
)
def test_bad_images_fail_or_are_skipped(raw: Path, tmp_path: Path, capsys, kind: str, message: str) -> None:
    image = _first_other_image(raw)
    _corrupt(kind, image, tmp_path / "outside.jpg")
    err = _prepare_fails(raw, tmp_path / "ds", capsys)
    assert err.startswith(f"okvqa-k8s: error: {image}: ") and message in err and "--skip-bad" in err

    assert main(["data", "prepare", str(raw), "--out", str(tmp_path / "ds"), "--skip-bad"]) == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["counts"]["train"]["skipped"] == 1
    assert message in manifest["skipped"]["train"][0]["reason"]
    assert image.name not in {p.name for p in (tmp_path / "ds" / "images").iterdir()}


def test_existing_output_and_overwrite(raw: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep").write_text("x")
    assert main(["data", "prepare", str(raw), "--out", str(out)]) == 2
    assert "already exists (use --overwrite" in capsys.readouterr().err
    assert main(["data", "prepare", str(raw), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "keep").exists() and (out / "train.json").is_file()


def test_missing_input_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["data", "prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "OpenEnded_mscoco_train2014_questions.json: file not found" in err
