"""Synthetic OK-VQA: official file layout, COCO file names, Pillow images, answers readable from pixels.

Real OK-VQA needs world knowledge no toy model has, and no download is allowed in tests or the demo, so
this generator keeps the *format* exact (question/annotation JSON with ten human answers, question_type
codes, COCO-named JPEGs) while making the *content* learnable: every image holds 1-4 shapes of one
colour and one kind, and every question asks for that colour, shape or count in the wording of one of the
eleven categories. A tiny LLaVA can learn this in minutes, so the before/after gain is real.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from okvqa_k8s.data.categories import CATEGORIES
from okvqa_k8s.data.okvqa import coco_image_name
from okvqa_k8s.evaluate.metric import normalize_answer
from okvqa_k8s.fsutil import atomic_directory, atomic_write_json
from okvqa_k8s.progress import bar

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 215, 30),
    "purple": (135, 45, 170),
    "orange": (245, 135, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
# What a careless annotator says instead: the 10 answers disagree a little, as in OK-VQA.
NEAR_MISS = {
    "red": "orange", "green": "blue", "blue": "purple", "yellow": "orange", "purple": "blue",
    "orange": "red", "white": "gray", "black": "gray", "circle": "round", "square": "rectangle",
    "triangle": "pyramid", "1": "2", "2": "3", "3": "4", "4": "5",
}  # fmt: skip
NUMBER_RAW = {1: "one", 2: "two", 3: "three", 4: "four"}

# (template, attribute) per category code; {shape}/{colour} fill in the *other* attributes as hints.
TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "one": (("What color is the car here?", "colour"), ("How many vehicles are parked here?", "count")),
    "two": (("What color is this company's logo?", "colour"), ("What shape is the brand's logo?", "shape")),
    "three": (("What color is this material?", "colour"), ("What shape is this object?", "shape")),
    "four": (("How many balls are on the field?", "count"), ("What color is the team's jersey?", "colour")),
    "five": (("How many pieces of fruit are on the plate?", "count"), ("What color is this food?", "colour")),
    "six": (("What color is the flag?", "colour"), ("What shape is drawn on the flag?", "shape")),
    "seven": (("What color is the man's shirt?", "colour"), ("How many people are in the photo?", "count")),
    "eight": (("What color is the flower?", "colour"), ("How many birds are in the tree?", "count")),
    "nine": (("What shape is the device?", "shape"), ("How many screens are shown?", "count")),
    "ten": (("What color is the sky in this picture?", "colour"), ("How many clouds can you see?", "count")),
    "other": (
        ("What color are the shapes?", "colour"),
        ("What color is the {shape}?", "colour"),
        ("What shape do you see?", "shape"),
        ("What shape is the {colour} object?", "shape"),
        ("How many shapes are there?", "count"),
        ("How many {shape}s are in the picture?", "count"),
    ),
}  # fmt: skip
# "Other" is the category this project fine-tunes on, so it gets the largest share.
CATEGORY_WEIGHTS = {code: (10 if code == "other" else 1.5) for code in CATEGORIES}

LICENSE = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0"}
INFO = {"year": 2019, "version": "1.1", "description": "Synthetic OK-VQA-format data made by okvqa-k8s."}


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    count: int
    size: tuple[int, int]


def _draw(scene: Scene, rng: random.Random) -> Image.Image:
    """Shapes on a soft random background; sizes vary so padding to square matters downstream."""
    w, h = scene.size
    bg = tuple(rng.randint(110, 170) for _ in range(3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    cells = [(i, j) for i in range(2) for j in range(2)]
    rng.shuffle(cells)
    cw, ch = w // 2, h // 2
    r = int(min(cw, ch) * 0.36)
    for i, j in cells[: scene.count]:
        cx = i * cw + cw // 2 + rng.randint(-cw // 10, cw // 10)
        cy = j * ch + ch // 2 + rng.randint(-ch // 10, ch // 10)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLOURS[scene.colour]
        if scene.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif scene.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def _answers(truth: str, raw_truth: str, rng: random.Random) -> list[dict[str, Any]]:
    """Ten annotator answers: mostly the truth (some spelled differently), 0-2 near misses."""
    misses = rng.choice((0, 0, 1, 1, 2))
    raws = [rng.choice((raw_truth, raw_truth, raw_truth.capitalize(), truth)) for _ in range(10 - misses)]
    raws += [NEAR_MISS.get(truth, truth)] * misses
    rng.shuffle(raws)
    return [
        {
            "answer_id": i + 1,
            "raw_answer": raw,
            "answer_confidence": rng.choice(("yes", "yes", "yes", "maybe")),
            "answer": normalize_answer(raw),
        }
        for i, raw in enumerate(raws)
    ]


def _question(scene: Scene, code: str, rng: random.Random) -> tuple[str, str, str]:
    template, attribute = rng.choice(TEMPLATES[code])
    text = template.format(shape=scene.shape, colour=scene.colour)
    if attribute == "colour":
        return text, scene.colour, scene.colour
    if attribute == "shape":
        return text, scene.shape, scene.shape
    return text, str(scene.count), NUMBER_RAW[scene.count]


def synthesize(out_dir: Path, *, size: int = 400, seed: int = 0, val_fraction: float = 0.2) -> dict[str, int]:
    """Write a synthetic OK-VQA dataset of `size` questions (one per image) into `out_dir`, atomically.

    Layout: OpenEnded_mscoco_{split}2014_questions.json, mscoco_{split}2014_annotations.json and
    {split}2014/COCO_{split}2014_%012d.jpg for split in train/val. Returns question counts per split.
    """
    if size < 2:
        raise ValueError("size must be at least 2 (one train and one val question)")
    rng = random.Random(seed)
    codes = list(CATEGORIES)
    weights = [CATEGORY_WEIGHTS[c] for c in codes]
    n_val = max(1, round(size * val_fraction))
    splits = {"train": size - n_val, "val": n_val}
    image_ids = rng.sample(range(1, 600_000), size)
    counts: dict[str, int] = {}
    with atomic_directory(out_dir) as tmp, bar(total=size, desc="synth images", unit="img") as progress:
        offset = 0
        for split, n in splits.items():
            (tmp / f"{split}2014").mkdir()
            questions, annotations = [], []
            # Every category appears in every split (the first 11 questions cycle through them).
            for k in range(n):
                code = codes[k] if k < len(codes) else rng.choices(codes, weights)[0]
                image_id = image_ids[offset + k]
                scene = Scene(
                    colour=rng.choice(list(COLOURS)),
                    shape=rng.choice(SHAPES),
                    count=rng.randint(1, 4),
                    size=(rng.choice((64, 80, 96)), rng.choice((64, 80, 96))),
                )
                _draw(scene, rng).save(tmp / f"{split}2014" / coco_image_name(split, image_id), quality=92)
                text, truth, raw_truth = _question(scene, code, rng)
                qid = image_id * 10 + 5
                questions.append({"image_id": image_id, "question": text, "question_id": qid})
                annotations.append(
                    {
                        "image_id": image_id,
                        "answer_type": "other",
                        "question_type": code,
                        "question_id": qid,
                        "answers": _answers(truth, raw_truth, rng),
                        "confidence": rng.choice((2, 3, 3)),
                    }
                )
                progress.update(1)
            offset += n
            common = {"license": LICENSE, "info": INFO, "data_type": "mscoco", "data_subtype": f"{split}2014"}
            atomic_write_json(
                tmp / f"OpenEnded_mscoco_{split}2014_questions.json",
                {**common, "task_type": "Open-Ended", "questions": questions},
            )
            atomic_write_json(
                tmp / f"mscoco_{split}2014_annotations.json",
                {**common, "question_types": CATEGORIES, "annotations": annotations},
            )
            counts[split] = n
    return counts


def make_prepared_dataset(
    out_dir: Path, *, size: int = 400, seed: int = 0, categories: tuple[str, ...] = ("other",)
) -> Path:
    """Synthesize raw OK-VQA files next to `out_dir` and prepare them into `out_dir` (tests, demo)."""
    from okvqa_k8s.data.prepare import prepare_dataset

    out_dir = Path(out_dir)
    raw = out_dir.with_name(out_dir.name + "-raw")
    if not raw.exists():
        synthesize(raw, size=size, seed=seed)
    prepare_dataset(raw, out_dir, categories=list(categories))
    return out_dir
