"""The VQA accuracy of GT-Vision-Lab/VQA `vqaEval.py`, in its current version and in the older one.

Two versions of that script produced published numbers, and they disagree on single answers, so every
figure says which one made it (`Metric`):

- `official` (the default): the file at the head of the repository's master branch, commit a013f00
  ("Fixed processing answers bug", 2021-03-11). Every human answer and the prediction lose newlines,
  tabs and outer spaces; then, only when the answers are not all identical, all of them and the
  prediction get the punctuation and the digit/article/contraction steps. When all agree, nothing more
  is done: `TENNIS` against ten `tennis` scores 0.
- `vqaeval-2017`: the file as of 458a8b2 (2016-10-08), unchanged through the VQA v2.0 release
  (2017-10-02) until a013f00, and the copy LAVIS carries (`lavis/common/vqa_tools/vqa_eval.py`). The
  prediction is always normalised fully, the human answers only get the punctuation step and only when
  they disagree.

Quirks both share are kept on purpose: the period regex has a typo'd look-behind (`(?!<=\\d)` is a
look-*ahead* for the text "<="), and it is applied at most 32 times (the script passes `re.UNICODE`,
which is 32, as `count`). Accuracy is the mean over the ten leave-one-annotator-out subsets of
min(1, matches / 3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

# Digits and articles (processDigitArticle).
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})

# The contracted forms the official table knows. Its keys are exactly each form with one apostrophe
# dropped ("couldn't've" ← "couldnt've" and "couldn'tve"); entries whose key has a capital letter or
# maps to itself can never change a lower-cased word and are left out.
_CONTRACTED = [
    "ain't",
    "aren't",
    "can't",
    "could've",
    "couldn't",
    "couldn't've",
    "didn't",
    "doesn't",
    "don't",
    "hadn't",
    "hadn't've",
    "hasn't",
    "haven't",
    "he'd",
    "he'd've",
    "he's",
    "how'd",
    "how'll",
    "how's",
    "isn't",
    "it'd",
    "it'd've",
    "it'll",
    "ma'am",
    "mightn't",
    "mightn't've",
    "might've",
    "mustn't",
    "must've",
    "needn't",
    "not've",
    "o'clock",
    "oughtn't",
    "'ow's'at",
    "shan't",
    "she'd've",
    "should've",
    "shouldn't",
    "shouldn't've",
    "somebody'd've",
    "somebody'll",
    "somebody's",
    "someone'd",
    "someone'd've",
    "someone'll",
    "someone's",
    "something'd",
    "something'd've",
    "something'll",
    "that's",
    "there'd",
    "there'd've",
    "there're",
    "there's",
    "they'd",
    "they'd've",
    "they'll",
    "they're",
    "they've",
    "'twas",
    "wasn't",
    "we'd've",
    "we've",
    "weren't",
    "what'll",
    "what're",
    "what's",
    "what've",
    "when's",
    "where'd",
    "where's",
    "where've",
    "who'd",
    "who'd've",
    "who'll",
    "who's",
    "who've",
    "why'll",
    "why're",
    "why's",
    "won't",
    "would've",
    "wouldn't",
    "wouldn't've",
    "y'all",
    "y'all'll",
    "y'all'd've",
    "you'd",
    "you'd've",
    "you'll",
    "you're",
    "you've",
]


def _contractions() -> dict[str, str]:
    table: dict[str, str] = {}
    for form in _CONTRACTED:
        for i, ch in enumerate(form):
            if ch == "'":
                table[form[:i] + form[i + 1 :]] = form
    # The official table maps this one backwards; kept for exactness.
    table["somebody'd"] = "somebodyd"
    return table


CONTRACTIONS = _contractions()

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")  # fmt: skip
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # see module docstring


def process_punctuation(text: str) -> str:
    """processPunctuation: drop a mark that touches a space (or when a digit-comma-digit occurs),
    otherwise turn it into a space; then strip periods not followed by a digit."""
    out = text
    has_number_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or has_number_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """processDigitArticle: lower-case, number words → digits, drop articles, expand contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def _clean(text: str) -> str:
    """What both versions do to the prediction (and the current one to every answer) first."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_prediction(prediction: str) -> str:
    """A model's answer with every step applied: how `vqaeval-2017` always compares it."""
    return process_digit_article(process_punctuation(_clean(prediction)))


def normalize_answer(answer: str) -> str:
    """Full normalisation of a human answer, used to pick training targets (not by the metric)."""
    return normalize_prediction(answer)


Metric = Literal["official", "vqaeval-2017"]
METRICS: tuple[Metric, ...] = get_args(Metric)
DEFAULT_METRIC: Metric = "official"
# Results written before they named their metric were scored by the only version the project had then.
UNNAMED_METRIC: Metric = "vqaeval-2017"
METRIC_SOURCES: dict[Metric, str] = {
    "official": "GT-Vision-Lab/VQA vqaEval.py at a013f00 (2021-03-11), the current official evaluator",
    "vqaeval-2017": "GT-Vision-Lab/VQA vqaEval.py at 458a8b2 (2016-10-08), as shipped with VQA v2.0 in 2017",
}


def result_metric(result: Mapping[str, Any]) -> Metric:
    """The metric that produced a result (results.json, a score file)."""
    return result.get("metric", UNNAMED_METRIC)


def compared_forms(prediction: str, answers: Sequence[str], metric: Metric) -> tuple[str, list[str]]:
    """The prediction and the human answers exactly as `metric` compares them for equality."""
    if metric == "official":
        pred, gts = _clean(prediction), [_clean(a) for a in answers]
        if len(set(gts)) > 1:
            pred, gts = normalize_prediction(pred), [normalize_prediction(a) for a in gts]
        return pred, gts
    if metric == "vqaeval-2017":
        gts = list(answers)
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
        return normalize_prediction(prediction), gts
    raise ValueError(f"unknown VQA metric {metric!r} (expected one of {', '.join(METRICS)})")


def vqa_accuracy(prediction: str, answers: Sequence[str], metric: Metric = DEFAULT_METRIC) -> float:
    """VQA accuracy of one prediction against its (normally ten) human answers, in [0, 1]."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred, gts = compared_forms(prediction, answers, metric)
    total = 0.0
    for left_out in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != left_out and a == pred)
        total += min(1.0, matches / 3.0)
    return total / len(gts)
