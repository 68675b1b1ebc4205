"""One look for every progress bar: counts, rate and ETA on stderr, quiet when not a terminal unless asked."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _disabled() -> bool:
    # OKVQA_PROGRESS=1 forces bars (e.g. in CI logs); =0 silences them.
    forced = os.environ.get("OKVQA_PROGRESS")
    if forced is not None:
        return forced == "0"
    return False


def bar(
    iterable: Iterable[T] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    unit_scale: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on stderr; `unit="B", unit_scale=True` gives byte rates (MB/s)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        unit_divisor=1024 if unit == "B" else 1000,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        disable=_disabled(),
        **kwargs,
    )
