"""Paging: the seed's `page` object for list answers, and the walk of an indexed time field in
bounded windows that lists without a selective filter use."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable


def page_of(count: int, page: int, size: int) -> dict:
    """`current` page (from 1), page `size`, `count` of matching items, `total` pages."""
    return {"current": page, "size": size, "count": count, "total": (count + size - 1) // size}


async def windows(read: Callable[[float, float], Awaitable[list]], low: float, high: float, *, size: int,
                  first: float, oldest_first: bool = False, ahead: bool = False,
                  narrowest: float = 60) -> AsyncIterator[list]:
    """What `read(start, end)` answers for the half-open ranges [start, end) of an indexed number (a
    time) that together cover [low, high), newest (highest) first or, with `oldest_first`, lowest
    first: the first range `first` wide, each next one as wide as should hold about `size` items at
    the last one's density (at most four times wider, so an empty stretch of years is crossed in a
    few steps; never narrower than `narrowest`). SecantusDB reads the whole range a query names
    before it applies a limit, so only a bounded range has a bounded cost; the caller stops when it
    has enough, and other queries (and the event loop) get their turn between two windows. Empty
    windows are not yielded. With `ahead`, the next window is read while the caller uses this one."""
    def bounds(low: float, high: float, width: float) -> tuple[float, float]:
        return (low, min(high, low + width)) if oldest_first else (max(low, high - width), high)

    width, next_read = first, None
    start, end = bounds(low, high, width)
    try:
        while high > low:
            window = await (next_read or read(start, end))
            next_read = None
            if oldest_first:
                low = end
            else:
                high = start
            if high > low:
                width = max(narrowest, int(width * min(4.0, size / max(len(window), 1))))
                start, end = bounds(low, high, width)
                if ahead:
                    next_read = asyncio.ensure_future(read(start, end))
            if window:
                yield window
    finally:
        if next_read is not None:
            next_read.cancel()
