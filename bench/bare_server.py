"""The baseline for bench/gate.py: a bare Tornado process with one JSON POST endpoint that parses
the body and answers {"code":0,"err_msg":""} - no auth, no schema, no logging of requests.

With --redis-url it also reads one Redis key per request (the QR token's cache key, with the
client settings of wxapp.context): the floor for a gate that makes one Redis round trip."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import tornado.web


class BareHandler(tornado.web.RequestHandler):
    def initialize(self, redis=None):
        self.redis = redis

    async def post(self):
        body = json.loads(self.request.body)
        if self.redis is not None:
            await self.redis.get("qr:" + str(body.get("qrcode", ""))[:64])
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"code": 0, "err_msg": ""}, separators=(",", ":")))


class PingHandler(tornado.web.RequestHandler):
    def get(self):
        self.finish("ok")


async def main(port: int, redis_url: str) -> None:
    redis = None
    if redis_url:  # the server's own client; imported only here, so the bare side stays bare
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from wxapp.context import redis_client
        redis = redis_client(redis_url)
    app = tornado.web.Application([(r"/v1/visit/qrcode", BareHandler, {"redis": redis}), (r"/ping", PingHandler)])
    server = app.listen(port, "127.0.0.1")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    if redis is not None:
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="", help="also GET one Redis key per request")
    options = parser.parse_args()
    asyncio.run(main(options.port, options.redis_url))
