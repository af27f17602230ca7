"""Writes wait for the journal unless MONGO_URI names a write concern, which is then used as given."""
from __future__ import annotations

import pytest

from wxapp.storage import Storage


@pytest.mark.parametrize("options, expected", [
    ("", {"j": True}),
    ("&w=majority&journal=true", {"w": "majority", "j": True}),
    ("&w=1", {"w": 1}),
])
def test_writes_use_the_write_concern_of_mongo_uri_or_wait_for_the_journal(databases, options, expected):
    uri = databases.mongo_uri + ("&" if "?" in databases.mongo_uri else "?") + options.lstrip("&")
    storage = Storage(uri.rstrip("?&"), "write_concern_test")
    try:
        assert storage.db.write_concern.document == expected
        assert storage.db.records.write_concern.document == expected
        assert storage.db.counters.write_concern.document == expected
    finally:
        storage.close()


@pytest.mark.gen_test
async def test_a_journaled_write_is_acknowledged_by_the_embedded_server(ctx):
    """SecantusDB accepts j: true on inserts and on the id counter's find-and-modify."""
    await ctx.storage.db.records.insert_one({"_id": 1})
    assert await ctx.storage.next_id("records") == 1
    assert ctx.storage.db.counters.write_concern.document == {"j": True}
