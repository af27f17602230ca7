"""The baseline for bench/gate.py: a bare Tornado process with one JSON POST endpoint that parses
the body and answers {"code":0,"err_msg":""} - no auth, no Redis, no logging of requests."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal

import tornado.web


class BareHandler(tornado.web.RequestHandler):
    def post(self):
        json.loads(self.request.body)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"code": 0, "err_msg": ""}, separators=(",", ":")))


class PingHandler(tornado.web.RequestHandler):
    def get(self):
        self.finish("ok")


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/v1/visit/qrcode", BareHandler), (r"/ping", PingHandler)])
    server = app.listen(port, "127.0.0.1")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
