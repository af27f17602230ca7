"""A process whose SECRET_KEY cannot read the stored secrets is refused at start-up (build_context)."""
from __future__ import annotations

import dataclasses

import pytest

from wxapp.context import build_context
from wxapp.system_settings import SecretKeyMismatch


@pytest.mark.gen_test
async def test_another_secret_key_is_refused_before_any_secret_is_stored(ctx, config):
    with pytest.raises(SecretKeyMismatch, match="same SECRET_KEY"):
        await build_context(dataclasses.replace(config, secret_key="some-other-key"))
    again = await build_context(config)  # the same key: accepted
    await again.close()


@pytest.mark.gen_test
async def test_a_koala_password_stored_before_the_key_check_existed_is_checked_too(ctx, config):
    await ctx.system_settings.save_servers({"koala_ip": "10.0.0.1", "koala_username": "u",
                                            "koala_password": "secret", "cloud_url": "https://v.example.com"})
    await ctx.storage.db.settings.delete_one({"_id": "secret_key_check"})  # as a database from before it
    with pytest.raises(SecretKeyMismatch, match="cannot decrypt the Koala password"):
        await build_context(dataclasses.replace(config, secret_key="some-other-key"))
    assert await ctx.storage.db.settings.find_one({"_id": "secret_key_check"}) is None  # nothing written
