"""Before/after report logic: deltas, table, changed examples, chart and HTML rendering."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from okvqa_k8s.data.okvqa import Question
from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.report import (
    bar_chart_png,
    changed_examples,
    changed_html,
    compare_markdown,
    compare_results,
    write_compare_report,
)


def _result(overall: float, cats: dict[str, tuple[float, int]], model: str) -> dict:
    return {
        "overall": overall,
        "count": sum(n for _, n in cats.values()),
        "per_category": {k: {"accuracy": a, "count": n} for k, (a, n) in cats.items()},
        "model": model,
        "split": "val",
        "metric": "official",
    }


def test_deltas_are_percentage_points_finetuned_minus_base() -> None:
    base = _result(20.0, {"Other": (20.0, 8), "Plants and Animals": (33.33, 3)}, "base")
    ft = _result(71.43, {"Other": (87.5, 8), "Weather and Climate": (0.0, 2)}, "ft")
    cmp = compare_results(base, ft)
    assert cmp["base"] is base and cmp["finetuned"] is ft
    assert cmp["delta"] == {
        "overall": 51.43,
        "per_category": {"Other": 67.5, "Plants and Animals": None, "Weather and Climate": None},
    }
    md = compare_markdown(cmp)
    assert cmp["metric"] == "official" and "split: val · metric: official" in md
    assert "| Other | 8 | 20.00 | 87.50 | +67.50 |" in md
    assert "| Plants and Animals | 3 | 33.33 | – | – |" in md
    assert "| **overall** | **10** | **20.00** | **71.43** | **+51.43** |" in md


@pytest.mark.parametrize(
    ("metric", "accuracies"),
    [
        # "Red." against ten "red": the current version leaves unanimous answers (and the prediction) as
        # they are, so it does not match; the 2017 one normalises the prediction to "red"
        ("official", [(0, 0), (0, 0), (100, 0)]),
        ("vqaeval-2017", [(0, 100), (0, 0), (100, 0)]),
    ],
)
def test_changed_examples_best_improvement_first(metric: str, accuracies: list[tuple[int, int]]) -> None:
    qs = [
        Question(1, 10, "What color?", "other", ("red",) * 10, "other"),
        Question(2, 20, "How many?", "other", ("2",) * 10, "number"),
        Question(3, 30, "What shape?", "other", ("circle",) * 10, "other"),
        Question(4, 40, "What color?", "other", ("blue",) * 10, "other"),
    ]
    base = {1: "blue", 2: "two", 3: "circle", 4: "green"}
    ft = {1: "Red.", 2: "2", 3: "square", 4: "yellow"}
    examples = changed_examples(base, ft, qs, metric)  # type: ignore[arg-type]
    # q2: "two" and "2" normalise to the same answer, so it did not change.
    assert [e["question_id"] for e in examples] == [1, 4, 3]
    assert [(e["base_accuracy"], e["finetuned_accuracy"]) for e in examples] == accuracies
    assert examples[0]["ground_truth"] == ["red"]


def test_html_escapes_and_embeds_thumbnails(tmp_path: Path) -> None:
    Image.new("RGB", (640, 480), "red").save(tmp_path / "a.jpg")
    examples = [{"question_id": 1, "image_id": 10, "question": "Is <b>this</b> red?", "category": "other",
                 "base": "<script>x</script>", "finetuned": "red", "base_accuracy": 0.0,
                 "finetuned_accuracy": 100.0, "ground_truth": ["red", "crimson"]}]  # fmt: skip
    page = changed_html(examples, {1: tmp_path / "a.jpg"}, "T", metric="vqaeval-2017")
    assert "(metric: vqaeval-2017)" in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert "Is &lt;b&gt;this&lt;/b&gt; red?" in page
    assert 'class="better"' in page and "red, crimson" in page
    b64 = page.split('src="data:image/jpeg;base64,')[1].split('"')[0]
    import base64

    thumb = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert max(thumb.size) == 192
    assert "(image missing)" in changed_html(examples, {}, "T", metric="official")


def test_bar_chart_is_a_png_of_the_expected_size() -> None:
    cmp = compare_results(_result(10.0, {"Other": (10.0, 4)}, "b"), _result(60.0, {"Other": (60.0, 4)}, "f"))
    png = bar_chart_png(cmp)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (500, 450)


def test_changed_page_has_a_section_for_every_category_trained_first(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.jpg")
    examples = [
        {"question_id": i, "image_id": i, "question": f"q{i}", "category": code, "base": "blue",
         "finetuned": "red", "base_accuracy": 0.0, "finetuned_accuracy": acc, "ground_truth": ["red"]}
        for i, code, acc in ((1, "eight", 100.0), (2, "other", 100.0), (3, "other", 0.0))
    ]  # fmt: skip
    counts = {"Other": 5, "Plants and Animals": 3, "Weather and Climate": 2}
    page = changed_html(examples, {1: tmp_path / "a.jpg"}, "T", counts, ["Other"], metric="official")
    sections = [part.split("</h2>")[0] for part in page.split("<h2>")[1:]]
    assert sections == [
        "By category",
        "Other (trained): 2 changed",
        "Plants and Animals: 1 changed",
        "Weather and Climate: 0 changed",
    ]
    assert page.count('<tr class="') == 3 and "No answer changed." in page
    summary = page.split("<table class=summary>")[1].split("</table>")[0]
    assert "<tr><td>Other</td><td>✓</td><td>5</td><td>2</td><td>1</td><td>0</td></tr>" in summary
    assert "<tr><td>Weather and Climate</td><td></td><td>2</td><td>0</td><td>0</td><td>0</td></tr>" in summary


def test_bar_chart_has_the_groups_beside_the_categories() -> None:
    base = _result(10.0, {"Other": (10.0, 4), "Plants and Animals": (40.0, 2)}, "b")
    ft = _result(50.0, {"Other": (60.0, 4), "Plants and Animals": (30.0, 2)}, "f")
    for result, (t, u) in ((base, (10.0, 40.0)), (ft, (60.0, 30.0))):
        result["trained_categories"] = ["Other"]
        result["groups"] = {
            "trained": {"accuracy": t, "count": 4, "categories": ["Other"]},
            "untrained": {"accuracy": u, "count": 2, "categories": ["Plants and Animals"]},
        }
    cmp = compare_results(base, ft)
    assert cmp["summary"]["untrained"] == "untrained categories: Δ \u221210.0 pp on 2 questions"
    img = Image.open(io.BytesIO(bar_chart_png(cmp)))
    # 2 categories, 2 groups and overall: wider than the 2-bar chart
    assert img.format == "PNG" and img.size == (600, 450)


def test_results_scored_with_different_metrics_are_not_compared(tmp_path: Path) -> None:
    base, ft = tmp_path / "base.json", tmp_path / "ft.json"
    legacy = _result(10.0, {"Other": (10.0, 4)}, "b")
    del legacy["metric"]  # written before results named their metric: scored by the 2017 version
    base.write_text(json.dumps(legacy))
    ft.write_text(json.dumps(_result(60.0, {"Other": (60.0, 4)}, "f")))
    with pytest.raises(UserError, match=r"different metrics \(vqaeval-2017 vs official\)"):
        write_compare_report(base, ft, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_result_with_an_unknown_metric_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({**_result(10.0, {"Other": (10.0, 4)}, "b"), "metric": "vqa"}))
    with pytest.raises(
        UserError, match=r"results.json: unknown metric 'vqa' \(expected one of official, vqaeval"
    ):
        write_compare_report(bad, bad, tmp_path / "out")
