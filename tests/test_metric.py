"""The official VQA accuracy, case by case against the semantics of GT-Vision-Lab's vqaEval.py."""

from __future__ import annotations

import pytest

from okvqa_k8s.evaluate.metric import (
    CONTRACTIONS,
    normalize_prediction,
    process_digit_article,
    process_punctuation,
    vqa_accuracy,
)


def answers(**counts: int) -> list[str]:
    out = [a for a, n in counts.items() for _ in range(n)]
    assert len(out) == 10
    return out


@pytest.mark.parametrize(
    ("matching", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_average_of_min_one_matches_over_three(matching: int, expected: float) -> None:
    gts = ["red"] * matching + ["blue"] * (10 - matching)
    assert vqa_accuracy("red", gts) == pytest.approx(expected)


def test_prediction_is_normalised_digits_articles_case_and_contractions() -> None:
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0
    assert vqa_accuracy("the dog", answers(dog=5, cat=5)) == 1.0
    assert vqa_accuracy("dont", answers(**{"don't": 4, "no": 6})) == 1.0
    assert normalize_prediction("  A\tRed\nBall. ") == "red ball"


def test_unanimous_ground_truth_is_not_normalised_as_in_the_official_script() -> None:
    # The official script only processes ground truth when annotators disagree.
    assert vqa_accuracy("two", ["two"] * 10) == 0.0
    assert vqa_accuracy("two", ["two"] * 9 + ["three"]) == 0.0  # punctuation step only: "two" stays "two"
    assert vqa_accuracy("hot dog", ["hot-dog"] * 10) == 0.0
    assert vqa_accuracy("hot dog", ["hot-dog"] * 9 + ["pizza"]) == 1.0


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
