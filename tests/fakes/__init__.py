"""Local stand-ins for WeChat, Megvii Koala and Aliyun SMS, for tests and manual runs."""
# Loaded lazily so that `python -m tests.fakes.wechat` does not import its own module twice.
from __future__ import annotations

import importlib

__all__ = ["FakeWeChat", "FakeKoala", "FakeSms"]
_MODULES = {"FakeWeChat": "wechat", "FakeKoala": "koala", "FakeSms": "sms"}


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
