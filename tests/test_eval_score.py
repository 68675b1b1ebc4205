"""`eval score`: VQA accuracy overall and per category (either metric version, named in the result), and
refusal of incomplete predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from okvqa_k8s.cli import main
from okvqa_k8s.data.categories import CATEGORIES
from okvqa_k8s.data.okvqa import Question
from okvqa_k8s.evaluate.score import load_questions, score_questions
from tests.test_metric import CASES


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


def _q(qid: int, category: str, answers: dict[str, int]) -> Question:
    given = tuple(answer for answer, n in answers.items() for _ in range(n))
    return Question(qid, qid * 10, f"question {qid}?", category, given, "other")


# Five questions in three categories; accuracies computed by hand from the official leave-one-out
# min(1, matches / 3) over the ten 9-answer subsets:
#   1 other  10 × red,               "red"   → 1.0
#   2 other  10 × blue,              "red"   → 0.0
#   3 eight   2 × rose + 8 × tulip,  "rose"  → (8 × 2/3 + 2 × 1/3) / 10 = 0.6
#   4 eight  10 × tree,              "tree"  → 1.0
#   5 ten     3 × sunny + 7 × cloudy, "sunny" → (3 × 2/3 + 7 × 1) / 10 = 0.9
HAND = [
    _q(1, "other", {"red": 10}),
    _q(2, "other", {"blue": 10}),
    _q(3, "eight", {"rose": 2, "tulip": 8}),
    _q(4, "eight", {"tree": 10}),
    _q(5, "ten", {"sunny": 3, "cloudy": 7}),
]
TUNED = {1: "red", 2: "red", 3: "rose", 4: "tree", 5: "sunny"}


def test_scores_by_category_and_trained_group_by_hand() -> None:
    result = score_questions(TUNED, HAND, trained=["other"])
    assert result["per_category"] == {
        "Other": {"accuracy": 50.0, "count": 2},
        "Plants and Animals": {"accuracy": 80.0, "count": 2},
        "Weather and Climate": {"accuracy": 90.0, "count": 1},
    }
    assert (result["overall"], result["count"]) == (70.0, 5)  # (1 + 0 + .6 + 1 + .9) / 5
    assert result["trained_categories"] == ["Other"]
    assert result["groups"] == {
        "trained": {"accuracy": 50.0, "count": 2, "categories": ["Other"]},
        # pooled over its own three questions, (.6 + 1 + .9) / 3, not the mean of 80 and 90
        "untrained": {
            "accuracy": 83.33,
            "count": 3,
            "categories": ["Plants and Animals", "Weather and Climate"],
        },
    }
    assert "groups" not in score_questions(TUNED, HAND)  # unknown trained categories: no groups
    both = score_questions(TUNED, HAND, trained=["other", "eight"])["groups"]
    assert (both["trained"]["accuracy"], both["trained"]["count"]) == (65.0, 4)  # (1 + 0 + .6 + 1) / 4
    assert (both["untrained"]["accuracy"], both["untrained"]["count"]) == (90.0, 1)
    none_untrained = score_questions(TUNED, HAND, trained=["other", "eight", "ten"])["groups"]["untrained"]
    assert none_untrained == {"accuracy": None, "count": 0, "categories": []}


def test_compare_sums_up_the_untrained_categories_in_one_line() -> None:
    from okvqa_k8s.evaluate.report import compare_markdown, compare_results

    base_preds = {1: "blue", 2: "green", 3: "tulip", 4: "tree", 5: "cloudy"}  # 0, 0, 1, 1, 1
    base = {**score_questions(base_preds, HAND, trained=["other"]), "split": "val"}
    tuned = {**score_questions(TUNED, HAND, trained=["other"]), "split": "val"}
    cmp = compare_results(base, tuned)
    assert cmp["trained_categories"] == ["Other"]
    assert cmp["groups"]["trained"] == {
        "base": 0.0, "finetuned": 50.0, "delta": 50.0, "count": 2, "categories": ["Other"]
    }  # fmt: skip
    assert cmp["groups"]["untrained"]["base"] == 100.0 and cmp["groups"]["untrained"]["delta"] == -16.67
    assert cmp["summary"] == {
        "trained": "trained categories: Δ +50.0 pp on 2 questions",
        "untrained": "untrained categories: Δ \u221216.7 pp on 3 questions",
    }
    md = compare_markdown(cmp)
    assert "| category | trained | questions | base (%) | fine-tuned (%) | Δ (pp) |" in md
    assert "| Other | ✓ | 2 | 0.00 | 50.00 | +50.00 |" in md
    assert "| Plants and Animals |  | 2 | 100.00 | 80.00 | -20.00 |" in md
    assert "| *trained categories* | ✓ | *2* | *0.00* | *50.00* | *+50.00* |" in md
    assert "| *untrained categories* |  | *3* | *100.00* | *83.33* | *-16.67* |" in md
    assert "| **overall** |  | **5** | **60.00** | **70.00** | **+10.00** |" in md
    assert "trained on: Other" in md and "untrained categories: Δ \u221216.7 pp on 3 questions" in md


def _official_files(tmp_path: Path, questions: list[Question]) -> tuple[Path, Path]:
    """`questions` as an official-format question + annotation file pair."""
    qfile, afile = tmp_path / "questions.json", tmp_path / "annotations.json"
    qfile.write_text(
        json.dumps({"questions": [
            {"question_id": q.question_id, "image_id": q.image_id, "question": q.question} for q in questions
        ]})
    )  # fmt: skip
    afile.write_text(
        json.dumps({"annotations": [
            {"question_id": q.question_id, "image_id": q.image_id, "question_type": q.category,
             "answer_type": q.answer_type,
             "answers": [{"answer": a, "answer_id": j + 1, "answer_confidence": "yes"}
                         for j, a in enumerate(q.answers)]}
            for q in questions
        ]})
    )  # fmt: skip
    return qfile, afile


@pytest.mark.parametrize(
    ("args", "metric", "overall"),
    [
        # the official file's figures of these five cases (tests/test_metric.py): 0, 1, 1, .9, 1 now;
        # 1, 0, 0, 0, 1 in the 2017 version
        ([], "official", 78.0),
        (["--metric", "official"], "official", 78.0),
        (["--metric", "vqaeval-2017"], "vqaeval-2017", 40.0),
    ],
)
def test_score_names_the_metric_and_official_is_the_default(
    tmp_path: Path, capsys, args: list[str], metric: str, overall: float
) -> None:
    picked = [CASES[i] for i in (0, 4, 9, 12, 7)]  # TENNIS, hot-dog, the dog, New York!, " tennis\n"
    assert [(c[2], c[3]) for c in picked] == [(0.0, 1.0), (1.0, 0.0), (1.0, 0.0), (0.9, 0.0), (1.0, 1.0)]
    qs = [
        Question(n, n * 10, f"question {n}?", "other", tuple(gts), "other")
        for n, (_, gts, _, _) in enumerate(picked, 1)
    ]
    qfile, afile = _official_files(tmp_path, qs)
    pfile = _write_preds(tmp_path / "p.jsonl", {n: pred for n, (pred, _, _, _) in enumerate(picked, 1)})
    assert main(["eval", "score", "-p", str(pfile), "-q", str(qfile), "-a", str(afile), *args]) == 0
    result = json.loads(pfile.with_suffix(".score.json").read_text())
    assert (result["metric"], result["overall"]) == (metric, overall)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"metric: {metric} (GT-Vision-Lab/VQA vqaEval.py at ")
    assert out[1] == f"overall: {overall:.2f}% (5 questions)"


def test_unknown_metric_is_refused(synth_raw: Path, tmp_path: Path, capsys) -> None:
    qfile, afile = _files(synth_raw)
    pfile = _write_preds(tmp_path / "p.jsonl", {1: "x"})
    assert (
        main(["eval", "score", "-p", str(pfile), "-q", str(qfile), "-a", str(afile), "--metric", "vqa"]) == 2
    )
    assert "'official', 'vqaeval-2017'" in capsys.readouterr().err
    assert not pfile.with_suffix(".score.json").exists()
