"""GET /healthz and GET /v1/openapi.json (CONTRACT §7)."""
import re

import pytest

from handlers import routes
from handlers.openapi import openapi_path


@pytest.mark.gen_test
async def test_healthz_reports_both_databases(anonymous):
    resp = await anonymous.fetch("/healthz")
    assert resp.status == 200
    assert resp.json() == {"code": 0, "err_msg": "", "data": {"mongo": "ok", "redis": "ok"}}


@pytest.mark.gen_test
async def test_openapi_is_a_3_1_document_of_every_v1_endpoint(anonymous):
    resp = await anonymous.fetch("/v1/openapi.json")
    assert resp.status == 200
    doc = resp.json()
    assert doc["openapi"] == "3.1.0"
    served = {}
    for pattern, handler in routes():
        if pattern.startswith("/v1/") and "(?:" not in pattern:
            methods = {m for m in ("get", "post", "put", "delete", "patch")
                       if getattr(handler, m) is not getattr(handler.__mro__[-2], m, None)}
            served[openapi_path(pattern)] = methods
    assert set(doc["paths"]) == set(served)
    for path, methods in served.items():
        assert set(doc["paths"][path]) == methods, path


@pytest.mark.gen_test
async def test_openapi_describes_bodies_and_who_may_call(anonymous):
    doc = (await anonymous.fetch("/v1/openapi.json")).json()
    put = doc["paths"]["/v1/config/servers"]["put"]
    schema = put["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"koala_ip", "koala_username", "koala_password", "cloud_url"}
    assert put["x-roles"] == ["admin"]
    assert {"adminSession": []} in put["security"] and {"apiKey": []} in put["security"]
    assert doc["paths"]["/v1/openapi.json"]["get"]["security"] == []
    for path in doc["paths"]:
        assert not re.search(r"[()?<>$^]", path), path
