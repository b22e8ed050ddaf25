"""Progress bars for anything that walks many images (hidden when stderr is not a terminal)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    return iter(tqdm(items, desc=desc, total=total, unit=unit, leave=False, disable=None, dynamic_ncols=True))
