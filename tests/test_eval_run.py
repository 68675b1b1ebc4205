"""`eval run` / `eval compare` against real servers with tiny LLaVAs on a prepared synthetic dataset."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from okvqa_k8s.cli import main
from okvqa_k8s.data.prepare import PROMPT_SUFFIX
from okvqa_k8s.evaluate.runner import load_items
from okvqa_k8s.evaluate.score import load_predictions, score_questions
from okvqa_k8s.serve.app import create_app
from okvqa_k8s.serve.background import BackgroundServer
from okvqa_k8s.serve.engine import LlavaEngine


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two real servers: 'base' and 'finetuned' (different tiny models, so answers differ)."""
    from okvqa_k8s.train.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("eval-models")
    engines = {name: LlavaEngine.load(build_tiny_model(root / name, seed=seed), model_id=name)
               for name, seed in (("base", 0), ("finetuned", 1))}  # fmt: skip
    urls = {}
    with BackgroundServer(create_app(lambda: engines["base"])) as base, \
         BackgroundServer(create_app(lambda: engines["finetuned"])) as ft:  # fmt: skip
        from okvqa_k8s.evaluate.client import ChatClient

        for name, srv in (("base", base), ("finetuned", ft)):
            with ChatClient(srv.url) as client:
                assert client.wait_ready(120) == name
            urls[name] = srv.url
        yield urls


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["eval", "run", *args])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def _questions(dataset: Path, n: int) -> list:
    return load_items(dataset, "val", max_questions=n)[1]


def test_prompts_are_the_training_prompts(prepared_dataset: Path) -> None:
    items, questions = load_items(prepared_dataset, "val", ["other"], max_questions=5)
    assert [i.question_id for i in items] == sorted(q.question_id for q in questions)
    for item, q in zip(items, questions, strict=True):
        assert item.prompt == f"{q.question}\n{PROMPT_SUFFIX}"
        assert (prepared_dataset / item.image).is_file()


def test_run_writes_predictions_and_official_accuracy(
    endpoints: dict[str, str], prepared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code, lines, err = _run(
        capsys,
        "--endpoint",
        endpoints["finetuned"],
        "--dataset",
        str(prepared_dataset),
        "--category",
        "other",
        "--max-questions",
        "10",
        "--concurrency",
        "3",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert lines[-1] == str(out / "results.json")
    result = json.loads((out / "results.json").read_text())
    assert result["count"] == 10 and result["model"] == "finetuned" and result["answered_now"] == 10
    assert set(result["per_category"]) == {"Other"}
    # Independently re-scored from the predictions file with the official metric:
    preds = load_predictions(out / "predictions.jsonl")
    rescored = score_questions(preds, _questions(prepared_dataset, 10))
    assert (result["overall"], result["per_category"]) == (rescored["overall"], rescored["per_category"])
    assert 0.0 <= result["overall"] <= 100.0
    md = (out / "results.md").read_text()
    assert f"**{result['overall']:.2f}**" in md and "| Other |" in md


def test_run_resumes_after_interruption(
    endpoints: dict[str, str], prepared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    args = [
        "--endpoint",
        endpoints["base"],
        "--dataset",
        str(prepared_dataset),
        "--max-questions",
        "8",
        "--out",
        str(out),
    ]
    assert _run(capsys, *args)[0] == 0
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    # As if killed mid-write: three whole lines survive, then half a line.
    (out / "predictions.jsonl").write_text("".join(lines[:3]) + lines[3][:17])
    (out / "results.json").unlink()
    code, _, err = _run(capsys, *args)
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert result["answered_now"] == 5 and result["count"] == 8
    after = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    assert after[:3] == lines[:3] and len(after) == 8
    assert sorted(json.loads(a)["question_id"] for a in after) == sorted(
        json.loads(a)["question_id"] for a in lines
    )

    # Other settings would mix two runs in one file: refused, unless --restart.
    code, _, err = _run(capsys, *args, "--max-tokens", "4")
    assert code == 2 and err.count("\n") == 1 and "--restart" in err
    code, _, err = _run(capsys, *args, "--max-tokens", "4", "--restart")
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["answered_now"] == 8


def test_unreachable_endpoint_is_one_line_error(
    prepared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = _run(
        capsys,
        "--endpoint",
        f"http://127.0.0.1:{port}",
        "--dataset",
        str(prepared_dataset),
        "--retries",
        "0",
        "--out",
        str(tmp_path / "x"),
    )
    assert code == 2
    assert err.startswith("okvqa-k8s: error: ") and err.count("\n") == 1


def test_bad_dataset_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--endpoint", "http://127.0.0.1:9", "--dataset", str(tmp_path / "nope"))
    assert code == 2 and "not a directory" in err and err.count("\n") == 1


def test_compare_report(
    endpoints: dict[str, str], prepared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    code, lines, err = _run(
        capsys,
        "--endpoint",
        endpoints["finetuned"],
        "--compare",
        endpoints["base"],
        "--dataset",
        str(prepared_dataset),
        "--max-questions",
        "12",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert lines[-1] == str(out / "compare.json")
    report = json.loads((out / "compare.json").read_text())
    base = json.loads((out / "base" / "results.json").read_text())
    ft = json.loads((out / "finetuned" / "results.json").read_text())
    assert report["base"]["overall"] == base["overall"] and report["finetuned"]["overall"] == ft["overall"]
    assert report["delta"]["overall"] == round(ft["overall"] - base["overall"], 2)
    for name, delta in report["delta"]["per_category"].items():
        assert delta == round(
            ft["per_category"][name]["accuracy"] - base["per_category"][name]["accuracy"], 2
        )
    assert (out / "per_category.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "changed.html").read_text()
    base_preds = load_predictions(out / "base" / "predictions.jsonl")
    ft_preds = load_predictions(out / "finetuned" / "predictions.jsonl")
    from okvqa_k8s.evaluate.metric import normalize_prediction

    changed = sum(normalize_prediction(base_preds[q]) != normalize_prediction(ft_preds[q]) for q in ft_preds)
    assert report["changed"]["count"] == changed == html.count("<tr class=")
    assert html.count("data:image/jpeg;base64,") == changed
    assert "| **overall** |" in (out / "compare.md").read_text()
    assert "| **overall** |" in "\n".join(lines)

    # The same report from the two result files.
    code = main(
        [
            "eval",
            "compare",
            str(out / "base"),
            str(out / "finetuned" / "results.json"),
            "--out",
            str(tmp_path / "again"),
        ]
    )
    assert code == 0
    again = json.loads((tmp_path / "again" / "compare.json").read_text())
    assert again["delta"] == report["delta"] and again["changed"] == report["changed"]


def test_compare_refuses_different_question_sets(
    endpoints: dict[str, str], prepared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, n in (("base", "3"), ("finetuned", "4")):
        assert (
            _run(
                capsys,
                "--endpoint",
                endpoints[name],
                "--dataset",
                str(prepared_dataset),
                "--max-questions",
                n,
                "--out",
                str(tmp_path / name),
            )[0]
            == 0
        )
    assert (
        main(
            [
                "eval",
                "compare",
                str(tmp_path / "base"),
                str(tmp_path / "finetuned"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "same questions" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dataset_from_s3(
    endpoints: dict[str, str],
    prepared_dataset: Path,
    tmp_path: Path,
    s3_bucket,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from okvqa_k8s.storage import stage_dataset

    uri = s3_bucket.uri("datasets/okvqa-other")
    stage_dataset(prepared_dataset, uri)
    code, _, err = _run(
        capsys,
        "--endpoint",
        endpoints["base"],
        "--dataset",
        uri,
        "--max-questions",
        "3",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "s3"),
        "--upload",
        s3_bucket.uri("runs/r1/eval"),
    )
    assert code == 0, err
    remote = json.loads((tmp_path / "s3" / "results.json").read_text())
    assert remote["dataset"] == uri and str(tmp_path / "cache") in remote["dataset_dir"]
    assert (
        _run(
            capsys,
            "--endpoint",
            endpoints["base"],
            "--dataset",
            str(prepared_dataset),
            "--max-questions",
            "3",
            "--out",
            str(tmp_path / "local"),
        )[0]
        == 0
    )
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    assert load_predictions(tmp_path / "s3" / "predictions.jsonl") == load_predictions(
        tmp_path / "local" / "predictions.jsonl"
    )
    assert remote["overall"] == local["overall"]
    from okvqa_k8s.storage import read_json

    assert read_json(s3_bucket.uri("runs/r1/eval/results.json")) == remote


def test_every_category_scored_with_the_trained_ones_marked(
    endpoints: dict[str, str], prepared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The evaluation set `data prepare` writes beside an 'Other' dataset, scored on all categories."""
    from okvqa_k8s.data.categories import CATEGORIES

    evalset = prepared_dataset / "eval"
    out = tmp_path / "all"
    code, lines, err = _run(
        capsys,
        "--endpoint", endpoints["finetuned"], "--compare", endpoints["base"],
        "--dataset", str(evalset), "--category", "all", "--trained-category", "other",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "compare.json").read_text())
    manifest = json.loads((evalset / "manifest.json").read_text())
    counts = manifest["counts"]["val"]["per_category"]
    assert len(counts) == 11
    for variant in ("base", "finetuned"):
        per_cat = report[variant]["per_category"]
        assert set(per_cat) == set(CATEGORIES.values())
        assert {name: c["count"] for name, c in per_cat.items()} == counts
    assert report["trained_categories"] == ["Other"]
    # the untrained figure is the official accuracy of the untrained questions alone
    questions = load_items(evalset, "val")[1]
    untrained = [q for q in questions if q.category != "other"]
    for variant in ("base", "finetuned"):
        preds = load_predictions(out / variant / "predictions.jsonl")
        alone = score_questions({q.question_id: preds[q.question_id] for q in untrained}, untrained)
        assert report["groups"]["untrained"][variant] == alone["overall"]
    group = report["groups"]["untrained"]
    assert group["count"] == len(untrained) == sum(n for name, n in counts.items() if name != "Other")
    assert report["summary"]["untrained"].startswith("untrained categories: Δ ")
    assert report["summary"]["untrained"].endswith(f" pp on {len(untrained)} questions")
    text = "\n".join(lines)
    assert "| Other | ✓ | " in text and report["summary"]["untrained"] in text
    html = (out / "changed.html").read_text()
    assert all(f"<h2>{name}" in html.replace("&amp;", "&") for name in CATEGORIES.values())
    assert "<h2>Other (trained): " in html


def test_a_category_without_questions_is_one_line_error(
    prepared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys,
        "--endpoint", "http://127.0.0.1:9", "--dataset", str(prepared_dataset),
        "--category", "other,Weather and Climate", "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("okvqa-k8s: error: --category: no questions for 'Weather and Climate' in ")
    assert "(split val: Other " in err
