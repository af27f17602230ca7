"""The OpenAPI document is exact: schemathesis, driven by /v1/openapi.json, finds no server error, no
valid request refused and no invalid request accepted, for every kind of caller (CONTRACT §7).

The app serves on this test's IOLoop; schemathesis runs as a separate `st` process (its calls are
blocking), with a fixed seed and example budget. Its hooks (tests/fuzz_hooks.py) give positive
cases what the document cannot say: the SMS code a person received, a visit window still to come."""
from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, GATE_KEY, KIOSK_KEY

ROOT = Path(__file__).resolve().parent.parent
ST = Path(sys.executable).with_name("st")
# Fixed, so that a run is reproducible; FUZZ_SEED / FUZZ_MAX_EXAMPLES explore further by hand.
SEED = int(os.environ.get("FUZZ_SEED", "20261130"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "20"))
CHECKS = ("not_a_server_error,positive_data_acceptance,negative_data_rejection,status_code_conformance,"
          "content_type_conformance,response_schema_conformance")


async def run_schemathesis(base_url: str, operations: list[str], auth: dict[str, dict], redis_url: str,
                           folder: Path) -> tuple[int, str]:
    """One `st run` over the given operations, presenting the credentials `auth` (security scheme ->
    schemathesis' auth settings) where the document asks for them; (exit code, output)."""
    config = folder / "schemathesis.toml"
    config.write_text("".join(
        f"[auth.openapi.{scheme}]\n" + "".join(f'{key} = "{value}"\n' for key, value in values.items())
        for scheme, values in auth.items()))
    args = [str(ST), "--config-file", str(config), "run", f"{base_url}/v1/openapi.json",
            "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--mode", "all",
            "--phases", "examples,coverage,fuzzing", "--checks", CHECKS, "--workers", "1",
            "--no-shrink", "--suppress-health-check", "all", "--request-timeout", "10",
            "--output-truncate", "false"]
    for operation in operations:
        args += ["--include-operation-id", operation]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "FUZZ_REDIS_URL": redis_url,
           "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    proc = await asyncio.create_subprocess_exec(*args, cwd=folder, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.gen_test(timeout=600)
async def test_schemathesis_finds_no_disagreement_for_any_caller(base_url, bind_visitor, bind_employee, ctx,
                                                                 tmp_path):
    employee = await bind_employee()
    visitor = await bind_visitor()
    callers = {
        "anonymous": {},
        "visitor": {"wechatSession": {"api_key": visitor.cookie("wx_session")}},
        "employee": {"wechatSession": {"api_key": employee.cookie("wx_session")}},
        "kiosk": {"apiKey": {"bearer": KIOSK_KEY}},
        "gate": {"apiKey": {"bearer": GATE_KEY}},
        # Last: its positive cases rewrite the settings (Koala's address) the others rely on.
        "admin": {"apiKey": {"bearer": ADMIN_KEY}},
    }
    # Each caller is fuzzed on what it may call (the rest answers 401/403 before reading any
    # input, as test_authorization_matrix proves); WeChat users on what any WeChat user may call too.
    roles = {"anonymous": {"public"}, "visitor": {"visitor", "wechat"}, "employee": {"employee", "wechat"},
             "kiosk": {"kiosk"}, "gate": {"gate"}, "admin": {"admin"}}
    doc = (await visitor.fetch("/v1/openapi.json")).json()
    failures = []
    for name, auth in callers.items():
        operations = [op["operationId"] for methods in doc["paths"].values() for op in methods.values()
                      if roles[name] & set(op["x-roles"])]
        folder = tmp_path / name
        folder.mkdir()
        code, output = await run_schemathesis(base_url, operations, auth, ctx.config.redis_url, folder)
        tested = re.search(r"Tested: *([0-9]+)", output)
        if code != 0 or not tested or int(tested.group(1)) != len(operations):
            failures.append(f"--- as {name} (exit {code}, {len(operations)} operations) ---\n{output[-12000:]}")
        (folder / "output.txt").write_text(output)
    assert not failures, "\n".join(failures)
