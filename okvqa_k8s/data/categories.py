"""The eleven OK-VQA knowledge categories and their codes.

OK-VQA's annotation files (v1.0/v1.1, `mscoco_{train,val}2014_annotations.json`) store the category of
every question in its `question_type` field as an English number word, and list the mapping in the
file's top-level `question_types` object:

    one   Vehicles and Transportation          seven People and Everyday life
    two   Brands, Companies and Products       eight Plants and Animals
    three Objects, Material and Clothing       nine  Science and Technology
    four  Sports and Recreation                ten   Weather and Climate
    five  Cooking and Food                     other Other
    six   Geography, History, Language and Culture

Names are spelled as in that object (note the lower-case "life"), so per-category reports line up with
the official evaluation output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from okvqa_k8s.errors import UserError

CATEGORIES: dict[str, str] = {
    "one": "Vehicles and Transportation",
    "two": "Brands, Companies and Products",
    "three": "Objects, Material and Clothing",
    "four": "Sports and Recreation",
    "five": "Cooking and Food",
    "six": "Geography, History, Language and Culture",
    "seven": "People and Everyday life",
    "eight": "Plants and Animals",
    "nine": "Science and Technology",
    "ten": "Weather and Climate",
    "other": "Other",
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


_BY_SLUG = {_slug(name): code for code, name in CATEGORIES.items()}


def category_name(code: str) -> str:
    """Display name of a `question_type` code; an unknown code is a data error, never a silent 'Other'."""
    try:
        return CATEGORIES[code]
    except KeyError:
        raise UserError(
            f"unknown OK-VQA question_type code {code!r} (expected one of {', '.join(CATEGORIES)})"
        ) from None


def resolve_categories(values: Iterable[str]) -> list[str]:
    """User spellings (code, name in any case/punctuation, or `all`) → sorted list of codes."""
    codes: set[str] = set()
    for raw in values:
        for value in (v.strip() for v in raw.split(",")):
            if not value:
                continue
            if value.lower() == "all":
                codes.update(CATEGORIES)
            elif value.lower() in CATEGORIES:
                codes.add(value.lower())
            elif _slug(value) in _BY_SLUG:
                codes.add(_BY_SLUG[_slug(value)])
            else:
                raise UserError(
                    f"--category {value!r}: unknown category (expected a code one..ten/other, a name such as "
                    f"'Plants and Animals', or 'all')"
                )
    if not codes:
        raise UserError("--category: at least one category is required")
    order = list(CATEGORIES)
    return sorted(codes, key=order.index)
