"""The seed's `page` object for list answers."""


def page_of(count: int, page: int, size: int) -> dict:
    """`current` page (from 1), page `size`, `count` of matching items, `total` pages."""
    return {"current": page, "size": size, "count": count, "total": (count + size - 1) // size}
