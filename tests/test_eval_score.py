"""`eval score`: official accuracy overall and per category, and refusal of incomplete predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from okvqa_k8s.cli import main
from okvqa_k8s.data.categories import CATEGORIES
from okvqa_k8s.evaluate.score import load_questions


def _files(raw: Path) -> tuple[Path, Path]:
    return raw / "OpenEnded_mscoco_val2014_questions.json", raw / "mscoco_val2014_annotations.json"


def _write_preds(path: Path, preds: dict[int, str]) -> Path:
    path.write_text("".join(json.dumps({"question_id": q, "answer": a}) + "\n" for q, a in preds.items()))
    return path


def test_scores_overall_and_per_category(synth_raw: Path, tmp_path: Path, capsys) -> None:
    qfile, afile = _files(synth_raw)
    questions = load_questions(qfile, afile)
    # Majority answer for "Other", a wrong answer elsewhere: Other is ~100 %, the rest 0 %.
    preds = {
        q.question_id: (max(set(q.answers), key=q.answers.count) if q.category == "other" else "zebra")
        for q in questions
    }
    out = tmp_path / "score.json"
    code = main(
        [
            "eval",
            "score",
            "-p",
            str(_write_preds(tmp_path / "p.jsonl", preds)),
            "-q",
            str(qfile),
            "-a",
            str(afile),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    per_cat = result["per_category"]
    assert set(per_cat) == set(CATEGORIES.values())  # names, not codes
    assert sum(c["count"] for c in per_cat.values()) == result["count"] == len(questions)
    assert per_cat["Other"]["accuracy"] >= 90.0
    assert all(c["accuracy"] == 0.0 for name, c in per_cat.items() if name != "Other")
    n_other = per_cat["Other"]["count"]
    assert result["overall"] == pytest.approx(
        per_cat["Other"]["accuracy"] * n_other / len(questions), abs=0.01
    )
    assert f"overall: {result['overall']:.2f}%" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.popitem(), "no prediction for question_id"),
        (lambda p: p.update({999_999_999: "x"}), "question_id 999999999 is not in the questions file"),
    ],
)
def test_missing_or_unknown_ids_are_errors(synth_raw: Path, tmp_path: Path, capsys, mutate, message) -> None:
    qfile, afile = _files(synth_raw)
    preds = {q.question_id: "red" for q in load_questions(qfile, afile)}
    mutate(preds)
    pfile = _write_preds(tmp_path / "p.jsonl", preds)
    assert main(["eval", "score", "-p", str(pfile), "-q", str(qfile), "-a", str(afile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not pfile.with_suffix(".score.json").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "p.jsonl:2: not valid JSON"),
        ('{"question_id": "7", "answer": "x"}', "p.jsonl:2: 'question_id' missing or not an integer"),
        ('{"question_id": 7}', "p.jsonl:2: 'answer' missing"),
        ('{"question_id": 1, "answer": "y"}', "p.jsonl:2: question_id 1 predicted twice"),
    ],
)
def test_malformed_predictions(synth_raw: Path, tmp_path: Path, capsys, line: str, message: str) -> None:
    qfile, afile = _files(synth_raw)
    pfile = tmp_path / "p.jsonl"
    pfile.write_text('{"question_id": 1, "answer": "x"}\n' + line + "\n")
    assert main(["eval", "score", "-p", str(pfile), "-q", str(qfile), "-a", str(afile)]) == 2
    assert message in capsys.readouterr().err
