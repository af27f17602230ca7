"""GET /healthz: whether MongoDB and Redis answer (CONTRACT §7), and how the embedded ones fare."""
from __future__ import annotations

import asyncio
import logging

from wxapp.auth import Role

from .base import SERVICE_UNAVAILABLE, APIHandler, api

log = logging.getLogger(__name__)
_TIMEOUT = 2.0


class HealthHandler(APIHandler):
    """For load balancers and monitoring: code 0 when both databases answer, HTTP 503 otherwise.
    With embedded databases, `embedded` shows each one's state and restarts, and why the server
    gave up restarting one that kept crashing."""

    async def _check(self, ping) -> str:
        try:
            await asyncio.wait_for(ping(), _TIMEOUT)
            return "ok"
        except (asyncio.TimeoutError, *SERVICE_UNAVAILABLE) as exc:
            log.warning("health check failed: %s", exc)
            return "unavailable"

    @api(allow=[Role.PUBLIC], summary="健康检查")
    async def get(self):
        mongo, redis = await asyncio.gather(self._check(self.ctx.storage.ping), self._check(self.ctx.redis.ping))
        data = {"mongo": mongo, "redis": redis}
        embedded = self.settings.get("embedded")
        given_up = []
        if embedded is not None and embedded.health():
            data["embedded"] = embedded.health()
            given_up = embedded.given_up()
        if given_up:
            self.write_envelope(503, "内嵌数据库反复崩溃，已停止自动重启，请查看日志并重启服务：" + "；".join(given_up),
                                data, status=503)
        elif mongo == redis == "ok":
            self.ok(data)
        else:
            self.write_envelope(503, "数据服务暂时不可用", data, status=503)


default_handlers = [(r"/healthz", HealthHandler)]
