"""Before/after reports from two `eval run` results: JSON, markdown table, PNG bar chart, HTML examples.

The numbers (`compare_results`) are pure; rendering is separate so the JSON a pipeline consumes never
depends on matplotlib. The HTML page embeds its thumbnails, so it can be copied off a pod or attached
to an issue and still show the images.

When the results know which categories the model was fine-tuned on (`eval run --trained-category`),
every part marks them, and the questions of the categories *not* trained on are pooled into one line,
`untrained categories: Δ −x.x pp on n questions`: what tuning on some categories did to the others.

Both results must have been scored with the same metric version (`metric`), which the report names.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.metric import METRICS, Metric, result_metric
from okvqa_k8s.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

MAX_EXAMPLES = 300  # per category on the changed-answers page
THUMB_PX = 192
GROUPS = ("trained", "untrained")


def load_result(path: Path) -> tuple[dict[str, Any], Path]:
    """A results.json (or the `eval run --out` directory holding one) and the directory it lives in;
    one written before results named their metric gets the metric that scored it."""
    file = path / "results.json" if path.is_dir() else path
    try:
        result = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{file}: not found (expected the results.json of `okvqa-k8s eval run`)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: not valid JSON ({exc.msg})") from None
    if not isinstance(result, dict) or not {"overall", "per_category", "count"} <= result.keys():
        raise UserError(f"{file}: not an eval result (needs overall, per_category and count)")
    result["metric"] = result_metric(result)
    if result["metric"] not in METRICS:
        raise UserError(f"{file}: unknown metric {result['metric']!r} (expected one of {', '.join(METRICS)})")
    return result, file.parent


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 2)


def compare_results(base: dict[str, Any], finetuned: dict[str, Any]) -> dict[str, Any]:
    """`{"base", "finetuned", "delta"}` with deltas in percentage points (finetuned − base).

    With trained categories known (both results carry the same `trained_categories`), also
    `trained_categories`, `groups` (per group: base, finetuned, delta, questions, categories) and
    `summary` (the two one-line sentences).
    """
    names = list(dict.fromkeys([*base["per_category"], *finetuned["per_category"]]))

    def acc(result: dict[str, Any], name: str) -> float | None:
        cat = result["per_category"].get(name)
        return None if cat is None else cat["accuracy"]

    cmp: dict[str, Any] = {
        "metric": result_metric(finetuned),
        "base": base,
        "finetuned": finetuned,
        "delta": {
            "overall": _delta(base["overall"], finetuned["overall"]),
            "per_category": {n: _delta(acc(base, n), acc(finetuned, n)) for n in names},
        },
    }
    if "groups" in finetuned and "groups" in base:
        cmp["trained_categories"] = finetuned["trained_categories"]
        cmp["groups"] = {}
        for group in GROUPS:
            b, f = base["groups"][group], finetuned["groups"][group]
            cmp["groups"][group] = {
                "base": b["accuracy"],
                "finetuned": f["accuracy"],
                "delta": _delta(b["accuracy"], f["accuracy"]),
                "count": f["count"],
                "categories": f["categories"],
            }
        cmp["summary"] = {group: group_line(group, cmp["groups"][group]) for group in GROUPS}
    return cmp


def _pp(value: float) -> str:
    """Signed percentage points with one decimal and a true minus sign: +65.7, −1.2."""
    return f"{value:+.1f}".replace("-", "\u2212")


def group_line(group: str, figures: dict[str, Any]) -> str:
    """`untrained categories: Δ −1.2 pp on 232 questions`; without a base figure, the fine-tuned
    accuracy instead of the change; or that none was evaluated."""
    count = figures.get("count")
    if not count:
        return f"{group} categories: none evaluated"
    if figures.get("delta") is None:
        return f"{group} categories: {figures['finetuned']:.2f}% on {count} questions"
    return f"{group} categories: Δ {_pp(figures['delta'])} pp on {count} questions"


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def compare_markdown(cmp: dict[str, Any]) -> str:
    """Accuracy table with deltas: what `eval run --compare` prints and saves as compare.md.

    With trained categories known, a `trained` column marks them, the two groups get a row each and
    the table ends with their one-line summaries.
    """
    base, ft = cmp["base"], cmp["finetuned"]
    trained = cmp.get("trained_categories")
    marked = trained is not None

    def row(name: str, mark: str, *cells: str) -> str:
        """A table row; the `trained` column (`mark`) only when trained categories are known."""
        return "| " + " | ".join([name, *([mark] if marked else []), *cells]) + " |"

    head = f"split: {ft.get('split', '?')}"
    if marked:
        head += f" · trained on: {', '.join(trained)}"
    head += f" · metric: {cmp['metric']}"
    lines = [
        "# VQA accuracy before/after fine-tuning",
        "",
        f"base: `{base.get('model', '?')}` · fine-tuned: `{ft.get('model', '?')}` · {head}",
        "",
        row("category", "trained", "questions", "base (%)", "fine-tuned (%)", "Δ (pp)"),
        "|---|" + (":---:|" if marked else "") + "---:|---:|---:|---:|",
    ]
    for name, delta in cmp["delta"]["per_category"].items():
        b, f = base["per_category"].get(name), ft["per_category"].get(name)
        count = (f or b or {}).get("count", 0)
        lines.append(
            row(
                name,
                "✓" if marked and name in trained else "",
                str(count),
                _fmt(b and b["accuracy"]),
                _fmt(f and f["accuracy"]),
                _fmt(delta, True),
            )
        )
    for group, g in (cmp.get("groups") or {}).items():
        cells = (str(g["count"]), _fmt(g["base"]), _fmt(g["finetuned"]), _fmt(g["delta"], True))
        lines.append(
            row(f"*{group} categories*", "✓" if group == "trained" else "", *(f"*{c}*" for c in cells))
        )
    cells = (
        str(ft["count"]),
        _fmt(base["overall"]),
        _fmt(ft["overall"]),
        _fmt(cmp["delta"]["overall"], True),
    )
    lines.append(row("**overall**", "", *(f"**{c}**" for c in cells)))
    if cmp.get("summary"):
        lines += ["", *(f"{line}  " for line in cmp["summary"].values())]
        lines[-1] = lines[-1].rstrip()
    changed = cmp.get("changed")
    if changed:
        lines += [
            "",
            f"{changed['count']} answers changed: {changed['improved']} improved, "
            f"{changed['regressed']} got worse, "
            f"{changed['count'] - changed['improved'] - changed['regressed']} "
            f"scored the same ({changed['html']}).",
        ]
    return "\n".join(lines) + "\n"


def bar_chart_png(cmp: dict[str, Any]) -> bytes:
    """Grouped bars, base vs fine-tuned, one group per category, then the trained/untrained groups (when
    known) and overall; trained categories are starred and hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = set(cmp.get("trained_categories") or ())
    groups = {k: v for k, v in (cmp.get("groups") or {}).items() if v["count"]}
    categories = list(cmp["delta"]["per_category"])
    names = [*categories, *(f"{g} categories" for g in groups), "overall"]

    def values(key: str) -> list[float]:
        result = cmp[key]
        return [
            *(result["per_category"].get(n, {}).get("accuracy", 0.0) for n in categories),
            *((g[key] or 0.0) for g in groups.values()),
            result["overall"],
        ]

    def label(name: str) -> str:
        short = name if len(name) <= 20 else name[:18] + "…"
        return short + " *" if name in trained else short

    fig, ax = plt.subplots(figsize=(min(14.0, max(5.0, 0.8 * len(names) + 2)), 4.5), dpi=100)
    xs = range(len(names))
    width = 0.38
    hatches = ["//" if n in trained or n == "trained categories" else "" for n in names]
    for offset, key, legend, color in (
        (-width / 2, "base", "base", "#9aa5b1"),
        (width / 2, "finetuned", "fine-tuned", "#1f77b4"),
    ):
        rects = ax.bar([x + offset for x in xs], values(key), width, label=legend, color=color)
        for rect, hatch in zip(rects, hatches, strict=True):
            rect.set_hatch(hatch)
        ax.bar_label(rects, fmt="%.1f", fontsize=8, padding=2)
    if len(names) > len(categories) + 1:
        ax.axvline(len(categories) - 0.5, color="#666", linewidth=0.8, linestyle=":")
    ax.set_xticks(list(xs), [label(n) for n in names], rotation=20, ha="right")
    ax.set_ylabel("VQA accuracy (%)")
    ax.set_ylim(0, 105)
    title = "OK-VQA accuracy before/after fine-tuning"
    if trained:
        title += " (* trained on)"
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _read_predictions(result: dict[str, Any], result_dir: Path) -> dict[int, str]:
    from okvqa_k8s.evaluate.score import load_predictions

    return load_predictions(result_dir / result.get("predictions", "predictions.jsonl"))


def changed_examples(
    base_preds: dict[int, str], ft_preds: dict[int, str], questions: list[Any], metric: Metric
) -> list[dict[str, Any]]:
    """Questions whose normalised answer changed, biggest improvement first, then biggest regression last;
    each answer's accuracy by `metric`, the one the report's figures use."""
    from okvqa_k8s.evaluate.metric import normalize_prediction, vqa_accuracy

    out = []
    for q in questions:
        b, f = base_preds.get(q.question_id), ft_preds.get(q.question_id)
        if b is None or f is None or normalize_prediction(b) == normalize_prediction(f):
            continue
        counts: dict[str, int] = {}
        for a in q.answers:
            counts[a] = counts.get(a, 0) + 1
        out.append(
            {
                "question_id": q.question_id,
                "image_id": q.image_id,
                "question": q.question,
                "category": q.category,
                "base": b,
                "finetuned": f,
                "base_accuracy": round(100 * vqa_accuracy(b, q.answers, metric), 2),
                "finetuned_accuracy": round(100 * vqa_accuracy(f, q.answers, metric), 2),
                "ground_truth": sorted(counts, key=lambda a: (-counts[a], a)),
            }
        )
    out.sort(key=lambda e: (-(e["finetuned_accuracy"] - e["base_accuracy"]), e["question_id"]))
    return out


def _thumbnail(path: Path) -> str | None:
    from PIL import Image

    from okvqa_k8s.data.images import FORMATS

    try:
        with Image.open(path, formats=FORMATS) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _example_row(e: dict[str, Any], images: dict[int, Path]) -> str:
    esc = html.escape
    thumb = _thumbnail(images[e["question_id"]]) if e["question_id"] in images else None
    img = f'<img src="{thumb}" alt="image {e["image_id"]}">' if thumb else "(image missing)"
    trend = (
        "better"
        if e["finetuned_accuracy"] > e["base_accuracy"]
        else "worse"
        if e["finetuned_accuracy"] < e["base_accuracy"]
        else "same"
    )
    return (
        f'<tr class="{trend}"><td>{img}</td>'
        f"<td>{esc(e['question'])}<br><small>#{e['question_id']}</small></td>"
        f"<td>{esc(e['base'])}<br><small>{e['base_accuracy']:.0f}%</small></td>"
        f"<td>{esc(e['finetuned'])}<br><small>{e['finetuned_accuracy']:.0f}%</small></td>"
        f"<td>{esc(', '.join(e['ground_truth']))}</td></tr>"
    )


def changed_html(
    examples: list[dict[str, Any]],
    images: dict[int, Path],
    title: str,
    categories: dict[str, int] | None = None,
    trained: list[str] | None = None,
    *,
    metric: Metric,
) -> str:
    """A self-contained page: thumbnail, question, both answers (with their accuracy), ground truth.

    With `categories` (name → questions evaluated), the page has a summary row and a section for every
    one of them — trained categories first, each with up to MAX_EXAMPLES examples — so a category whose
    answers did not move is shown as such instead of being absent.
    """
    from okvqa_k8s.data.categories import category_name

    esc = html.escape
    head = "<tr><th>image</th><th>question</th><th>base</th><th>fine-tuned</th><th>ground truth</th></tr>"
    if categories is None:
        sections = [("", examples)]
        summary = ""
    else:
        trained_set = set(trained or ())
        order = sorted(categories, key=lambda n: (n not in trained_set, n))
        by_name: dict[str, list[dict[str, Any]]] = {n: [] for n in order}
        for e in examples:
            by_name.setdefault(category_name(e["category"]), []).append(e)
        sections = [(n + (" (trained)" if n in trained_set else ""), by_name[n]) for n in order]
        rows = []
        for name in order:
            mine = by_name[name]
            better = sum(e["finetuned_accuracy"] > e["base_accuracy"] for e in mine)
            worse = sum(e["finetuned_accuracy"] < e["base_accuracy"] for e in mine)
            rows.append(
                f"<tr><td>{esc(name)}</td><td>{'✓' if name in trained_set else ''}</td>"
                f"<td>{categories[name]}</td><td>{len(mine)}</td><td>{better}</td><td>{worse}</td></tr>"
            )
        summary = (
            "<h2>By category</h2><table class=summary><thead><tr><th>category</th><th>trained</th>"
            "<th>questions</th><th>answers changed</th><th>better</th><th>worse</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    parts = []
    for name, mine in sections:
        rows = [_example_row(e, images) for e in mine[:MAX_EXAMPLES]]
        more = (
            f"<p>Showing the first {MAX_EXAMPLES} of {len(mine)} changed answers.</p>"
            if len(mine) > MAX_EXAMPLES
            else ""
        )
        heading = f"<h2>{esc(name)}: {len(mine)} changed</h2>" if name else ""
        if name and not mine:
            parts.append(f"{heading}<p>No answer changed.</p>")
            continue
        parts.append(
            f"{heading}{more}<table><thead>\n{head}\n</thead>\n<tbody>\n{chr(10).join(rows)}\n</tbody></table>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
td, th {{ border: 1px solid #ccc; padding: .4rem .6rem; vertical-align: top; }}
tr.better td:nth-child(4) {{ background: #e3f6e3; }} tr.worse td:nth-child(4) {{ background: #fbe4e4; }}
img {{ max-width: {THUMB_PX}px; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{len(examples)} questions where the fine-tuned answer differs from the base answer
(best improvements first).
Percentages are the VQA accuracy of each answer (metric: {esc(metric)}).</p>
{summary}
{chr(10).join(parts)}
</body></html>
"""


def write_compare_report(base_path: Path, finetuned_path: Path, out_dir: Path) -> Path:
    """compare.json, compare.md, per_category.png and changed.html in `out_dir`; returns compare.json."""
    from okvqa_k8s.evaluate.runner import load_items

    base, base_dir = load_result(base_path)
    ft, ft_dir = load_result(finetuned_path)
    if base.get("split") != ft.get("split") or base["count"] != ft["count"]:
        raise UserError(
            f"{base_path} and {finetuned_path} were not run on the same questions "
            f"({base.get('split')}/{base['count']} vs {ft.get('split')}/{ft['count']})"
        )
    if base["metric"] != ft["metric"]:
        raise UserError(
            f"{base_path} and {finetuned_path} were scored with different metrics "
            f"({base['metric']} vs {ft['metric']}); rerun `eval run` with the same --metric"
        )
    if base.get("trained_categories") != ft.get("trained_categories"):
        raise UserError(
            f"{base_path} and {finetuned_path} mark different trained categories "
            f"({base.get('trained_categories')} vs {ft.get('trained_categories')}); "
            "rerun `eval run` with the same --trained-category"
        )
    cmp = compare_results(base, ft)
    dataset_dir = Path(ft.get("dataset_dir", ""))
    if not (dataset_dir / f"{ft['split']}_questions.json").is_file():
        raise UserError(
            f"{finetuned_path}: dataset_dir {dataset_dir} is gone; cannot show the changed examples"
        )
    items, questions = load_items(dataset_dir, ft["split"], ft.get("categories"))
    ft_preds = _read_predictions(ft, ft_dir)
    questions = [q for q in questions if q.question_id in ft_preds]
    examples = changed_examples(_read_predictions(base, base_dir), ft_preds, questions, ft["metric"])
    images = {it.question_id: dataset_dir / it.image for it in items}
    cmp["changed"] = {
        "count": len(examples),
        "improved": sum(e["finetuned_accuracy"] > e["base_accuracy"] for e in examples),
        "regressed": sum(e["finetuned_accuracy"] < e["base_accuracy"] for e in examples),
        "html": "changed.html",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "per_category.png", bar_chart_png(cmp))
    counts = {name: cat["count"] for name, cat in ft["per_category"].items()}
    page = changed_html(
        examples,
        images,
        "Answers changed by fine-tuning",
        counts,
        cmp.get("trained_categories"),
        metric=ft["metric"],
    )
    atomic_write_text(out_dir / "changed.html", page)
    atomic_write_text(out_dir / "compare.md", compare_markdown(cmp))
    atomic_write_json(out_dir / "compare.json", cmp)
    return out_dir / "compare.json"
