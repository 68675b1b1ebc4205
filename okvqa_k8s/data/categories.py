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


EXPECTED = "a code one..ten/other, a name such as 'Plants and Animals', or 'all'"


def category_codes(value: str) -> list[str]:
    """One user spelling (a code, a name in any case/punctuation, or `all`) → its codes.

    Raises ValueError naming the value, so a spec validator and the CLI word the problem alike.
    """
    text = value.strip()
    if text.lower() == "all":
        return list(CATEGORIES)
    if text.lower() in CATEGORIES:
        return [text.lower()]
    if _slug(text) in _BY_SLUG:
        return [_BY_SLUG[_slug(text)]]
    raise ValueError(f"{text!r}: unknown category (expected {EXPECTED})")


def in_order(codes: Iterable[str]) -> list[str]:
    """Codes in the official order (one..ten, other), each once."""
    order = list(CATEGORIES)
    return sorted(set(codes), key=order.index)


def resolve_categories(values: Iterable[str], option: str = "--category") -> list[str]:
    """User spellings (code, name in any case/punctuation, or `all`; comma-separated allowed) → sorted
    codes. `option` names the flag or field in the one-line error."""
    codes: set[str] = set()
    for raw in values:
        for value in (v.strip() for v in raw.split(",")):
            if not value:
                continue
            try:
                codes.update(category_codes(value))
            except ValueError as exc:
                raise UserError(f"{option} {exc}") from None
    if not codes:
        raise UserError(f"{option}: at least one category is required")
    return in_order(codes)
