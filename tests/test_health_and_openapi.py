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


@pytest.mark.gen_test
async def test_openapi_gives_wechat_endpoints_the_session_cookie_scheme(anonymous):
    doc = (await anonymous.fetch("/v1/openapi.json")).json()
    scheme = doc["components"]["securitySchemes"]["wechatSession"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "cookie", "wx_session")
    paths = doc["paths"]
    assert paths["/v1/subject"]["post"]["security"] == [{"wechatSession": []}]
    for path, method in (("/v1/visit/records", "get"), ("/v1/auth/records", "get"), ("/v1/auth/{id}", "put")):
        assert {"wechatSession": []} in paths[path][method]["security"], (method, path)
    for path, operations in paths.items():
        for method, op in operations.items():
            for requirement in op["security"]:
                assert set(requirement) <= set(doc["components"]["securitySchemes"]), (method, path)


@pytest.mark.gen_test
async def test_openapi_describes_itself_as_a_document_not_an_envelope(anonymous):
    doc = (await anonymous.fetch("/v1/openapi.json")).json()
    schema = doc["paths"]["/v1/openapi.json"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "code" not in schema.get("properties", {}) and "openapi" in schema["required"]


@pytest.mark.gen_test
async def test_openapi_states_patterns_bounds_and_that_nothing_is_nullable(anonymous):
    doc = (await anonymous.fetch("/v1/openapi.json")).json()
    subject = doc["paths"]["/v1/subject"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = subject["properties"]["name"]
    assert name["maxLength"] == 32 and "\\u202a-\\u202e" in name["pattern"] and "\\x00-\\x1f" in name["pattern"]
    assert "pattern" in subject["properties"]["phone"]
    params = {p["name"]: p["schema"] for p in doc["paths"]["/v1/notifications"]["get"]["parameters"]}
    assert params["page"]["maximum"] < 2**63
    gate = doc["paths"]["/v1/visit/qrcode"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert gate["properties"]["gate"]["type"] == "string"  # not ["string", "null"]: null is refused
    templates = doc["paths"]["/v1/config/templates"]["put"]["requestBody"]["content"]
    assert set(templates) == {"application/json"}  # wechat_fields is an object: no form for it
