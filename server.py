"""Start the visitor appointment system: configuration, embedded databases, one Tornado server."""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sys

from handlers import make_app, max_body_size
from handlers.proxies import ProxiedHTTPServer
from wxapp.config import Config, ConfigError
from wxapp.context import build_context
from wxapp.embedded import EmbeddedError, EmbeddedServices
from wxapp.system_settings import SecretKeyMismatch

log = logging.getLogger("visitor")


async def serve(config: Config, embedded: EmbeddedServices | None = None) -> None:
    """Build the context and the app, listen, and return after SIGTERM or SIGINT."""
    context = await build_context(config)
    context.background.start()
    # Everything built so far lives as long as the process: keep it out of the garbage collector's
    # scans, which otherwise pause the gate's hot path now and then.
    gc.freeze()
    server = ProxiedHTTPServer(make_app(context.services, embedded=embedded), trusted_proxies=config.trusted_proxies,
                               **http_server_options(config))
    server.listen(config.port, config.host)
    log.info("Serving on http://%s:%d/", config.host, config.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("Shutting down")
    server.stop()
    await server.close_all_connections()
    await context.close()


def http_server_options(config: Config) -> dict:
    """The outer bounds of every connection: a client that has not sent its headers (or, on a kept-alive
    connection, its next request) or then its body within REQUEST_TIMEOUT seconds is disconnected,
    and no body may exceed the largest an endpoint accepts (each endpoint refuses more on its own)."""
    return dict(idle_connection_timeout=config.request_timeout,
                body_timeout=config.request_timeout, max_body_size=max_body_size())


def main() -> int:
    """Run the server until it is told to stop; the exit code says whether it started."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_env().with_secret_key()
    except ConfigError as exc:
        log.error("Configuration error: %s", exc)
        return 2
    embedded = EmbeddedServices(config.data_dir, mongo=not config.mongo_uri, redis=not config.redis_url)
    # SIGTERM during start-up must still stop what was started: turn it into an exception.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        embedded.start()
        if embedded.mongo:
            config = dataclasses.replace(config, mongo_uri=embedded.mongo.uri)
            log.info("MongoDB: embedded SecantusDB, data in %s", config.data_dir / "mongo")
        else:
            log.info("MongoDB: %s", _redact(config.mongo_uri))
        if embedded.redis:
            config = dataclasses.replace(config, redis_url=embedded.redis.url)
            log.info("Redis: embedded redis-server, data in %s", config.data_dir / "redis")
        else:
            log.info("Redis: %s", _redact(config.redis_url))
        asyncio.run(serve(config, embedded))
    except KeyboardInterrupt:
        log.info("Interrupted")
    except EmbeddedError as exc:
        log.error("%s", exc)
        return 1
    except SecretKeyMismatch as exc:
        log.error("Refusing to start: %s", exc)
        return 2
    finally:
        embedded.stop()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _redact(uri: str) -> str:
    """A database URI without its password, for the log."""
    scheme, sep, rest = uri.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


if __name__ == "__main__":
    sys.exit(main())
