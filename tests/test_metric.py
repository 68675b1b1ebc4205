"""The VQA accuracy, case by case against GT-Vision-Lab/VQA vqaEval.py: its current version (`official`,
commit a013f00) and the older one (`vqaeval-2017`, commit 458a8b2)."""

from __future__ import annotations

import pytest

from okvqa_k8s.evaluate.metric import (
    CONTRACTIONS,
    METRICS,
    compared_forms,
    normalize_prediction,
    process_digit_article,
    process_punctuation,
    result_metric,
    vqa_accuracy,
)


def answers(**counts: int) -> list[str]:
    out = [a for a, n in counts.items() for _ in range(n)]
    assert len(out) == 10
    return out


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("matching", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_average_of_min_one_matches_over_three(
    matching: int, expected: float, metric: str
) -> None:
    gts = ["red"] * matching + ["blue"] * (10 - matching)
    assert vqa_accuracy("red", gts, metric) == pytest.approx(expected)  # type: ignore[arg-type]


# Where the two versions differ, and controls where they agree. The expected figures were not worked out
# by hand: they are what the official file itself returns. Derivation (outside the repository, nothing of
# it committed): `git show <commit>:PythonEvaluationTools/vqaEvaluation/vqaEval.py` from a fetch of
# github.com/GT-Vision-Lab/VQA, for a013f00 (head of master, 2021-03-11) and 458a8b2 (2016-10-08); its two
# Python 2 `print "…"` statements turned into calls, nothing else changed; `VQAEval(vqa, vqaRes).evaluate()`
# run on stand-ins whose `.qa` hold these cases (answers with answer_id 1..10), `setEvalQA` overridden to
# keep the unrounded accuracy. The same harness agreed with `vqa_accuracy` on 4,000 random cases built
# from the tokens below (both versions).
CASES = [
    # (prediction, the ten answers, official a013f00, vqaeval-2017 458a8b2)
    # ten identical answers: the current version compares the stripped strings as they are
    ("TENNIS", ["tennis"] * 10, 0.0, 1.0),
    ("the dog", ["dog"] * 10, 0.0, 1.0),
    ("dog.", ["dog"] * 10, 0.0, 1.0),
    ("Two", ["2"] * 10, 0.0, 1.0),
    ("two", ["two"] * 10, 1.0, 0.0),
    ("hot-dog", ["hot-dog"] * 10, 1.0, 0.0),
    ("Dog", ["dog "] * 5 + ["dog"] * 5, 0.0, 1.0),  # identical once stripped, so unanimous
    (" tennis\n", ["tennis"] * 10, 1.0, 1.0),
    # mixed answers: the current version normalises both sides fully
    ("two", answers(**{"2": 3, "two": 3, "three": 4}), 1.0, 0.9),
    ("the dog", answers(**{"a dog": 4, "cat": 6}), 1.0, 0.0),
    ("dont", answers(dont=4, no=6), 1.0, 0.0),
    ("youre", answers(**{"you're": 3, "youre": 3, "no": 4}), 1.0, 0.9),
    ("New York!", answers(**{"New York!": 3, "nyc": 7}), 0.9, 0.0),
    ("Red", answers(Red=4, blue=6), 1.0, 0.0),
    ("hot dog", answers(**{"hot-dog": 9, "pizza": 1}), 1.0, 1.0),
    ("1,000", answers(**{"1000": 4, "one thousand": 6}), 1.0, 1.0),
]


@pytest.mark.parametrize(("prediction", "gts", "official", "legacy"), CASES)
def test_both_versions_score_as_the_official_files_do(
    prediction: str, gts: list[str], official: float, legacy: float
) -> None:
    assert vqa_accuracy(prediction, gts, "official") == pytest.approx(official)
    assert vqa_accuracy(prediction, gts, "vqaeval-2017") == pytest.approx(legacy)
    assert vqa_accuracy(prediction, gts) == vqa_accuracy(prediction, gts, "official")  # the default


def test_compared_forms_say_what_each_version_compares() -> None:
    mixed = ["New York!", "a dog", "dont"] + ["x"] * 7
    assert compared_forms(" New York!\t", mixed, "official") == (
        "new york",
        ["new york", "dog", "don't"] + ["x"] * 7,
    )
    assert compared_forms(" New York!\t", mixed, "vqaeval-2017") == (
        "new york",
        ["New York ", "a dog", "dont"] + ["x"] * 7,
    )
    assert compared_forms(" The Dog ", ["The Dog"] * 10, "official") == ("The Dog", ["The Dog"] * 10)
    assert compared_forms(" The Dog ", ["The Dog"] * 10, "vqaeval-2017") == ("dog", ["The Dog"] * 10)


def test_unknown_metric_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="official, vqaeval-2017"):
        vqa_accuracy("x", ["x"] * 10, "vqaeval-2021")  # type: ignore[arg-type]


def test_results_without_a_metric_were_scored_by_the_2017_version() -> None:
    assert result_metric({"overall": 1.0}) == "vqaeval-2017"
    assert result_metric({"overall": 1.0, "metric": "official"}) == "official"


def test_full_normalisation() -> None:
    assert normalize_prediction("  A\tRed\nBall. ") == "red ball"


def test_punctuation_rules() -> None:
    assert process_punctuation("hot-dog") == "hot dog"  # mark inside a word becomes a space
    assert process_punctuation("yes , no") == "yes  no"  # mark next to a space is dropped
    assert process_punctuation("1,000") == "1000"  # digit,digit drops every mark
    assert process_punctuation("3.5") == "3.5"  # a period before a digit stays
    assert process_punctuation("mr. smith.") == "mr smith"
    assert process_punctuation("." * 40) == "." * 8  # the script's count=re.UNICODE (32) quirk


def test_digit_article_rules() -> None:
    assert process_digit_article("The Three an apple none") == "3 apple 0"
    assert process_digit_article("youre wont") == "you're won't"


def test_contraction_table_is_the_official_one_apostrophe_rule() -> None:
    assert CONTRACTIONS["couldnt've"] == CONTRACTIONS["couldn'tve"] == "couldn't've"
    assert CONTRACTIONS["y'alld've"] == "y'all'd've"
    assert "couldntve" not in CONTRACTIONS  # two apostrophes dropped: not in the official table
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # the official table's backwards entry
    assert "its" not in CONTRACTIONS and "were" not in CONTRACTIONS
    assert len(CONTRACTIONS) == 114  # 120 official keys less 4 capitalised, 2 identity


def test_empty_answers_is_an_error() -> None:
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])
