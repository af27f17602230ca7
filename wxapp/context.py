"""The application context: every client and service, built once at start-up and shared."""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import redis.asyncio as aioredis

from .auth import Admins, ApiKeys, OAuthStates, Sessions, WeChatUsers
from .config import Config
from .security import SecretBox
from .storage import Storage
from .system_settings import SystemSettings
from .wechat import WeChatOAuthService

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AppContext:
    """What handlers use; nothing in it holds state another server process would need."""

    config: Config
    storage: Storage
    redis: aioredis.Redis
    executor: ThreadPoolExecutor
    clock: Callable[[], float]
    api_keys: ApiKeys
    admins: Admins
    wechat_users: WeChatUsers
    wechat_sessions: Sessions
    admin_sessions: Sessions
    oauth_states: OAuthStates
    oauth: WeChatOAuthService
    system_settings: SystemSettings

    async def close(self) -> None:
        """Release connections and threads."""
        await self.redis.aclose()
        self.storage.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


async def build_context(config: Config, *, clock: Callable[[], float] = time.time) -> AppContext:
    """Connect to MongoDB and Redis, create indexes, seed API keys and the first admin."""
    if not (config.mongo_uri and config.redis_url and config.secret_key):
        raise ValueError("build_context needs mongo_uri, redis_url and secret_key")
    storage = Storage(config.mongo_uri, config.mongo_db)
    redis = aioredis.Redis.from_url(
        config.redis_url, decode_responses=True, socket_connect_timeout=3, socket_timeout=5,
        health_check_interval=30,
    )
    executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blocking")
    try:
        await storage.ping()
        await redis.ping()
        await storage.ensure_indexes()
        ctx = AppContext(
            config=config,
            storage=storage,
            redis=redis,
            executor=executor,
            clock=clock,
            api_keys=ApiKeys(storage, redis, clock),
            admins=Admins(storage, executor, clock),
            wechat_users=WeChatUsers(storage, clock),
            wechat_sessions=Sessions(redis, "wechat", config.wechat_session_ttl),
            admin_sessions=Sessions(redis, "admin", config.admin_session_ttl),
            oauth_states=OAuthStates(redis),
            oauth=WeChatOAuthService(config, executor),
            system_settings=SystemSettings(storage, SecretBox(config.secret_key), clock),
        )
        await ctx.api_keys.seed(config.api_keys)
        await ctx.admins.seed(config.admin_username, config.admin_password)
    except BaseException:
        await redis.aclose()
        storage.close()
        executor.shutdown(wait=False)
        raise
    return ctx
