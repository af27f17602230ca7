"""The application context: every client and service, built once at start-up and shared."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from redis import Redis as SyncRedis
import redis.asyncio as aioredis

from .auth import Admins, ApiKeys, LoginThrottle, OAuthStates, Sessions, WeChatUsers
from .bindings import Bindings
from .codes import VerificationCodes
from .config import Config
from .delivery import DeliveryWorker
from .gate import Gate, GateCache, PassLog
from .images import Images
from .koala import KoalaClient
from .limits import RateLimiter, VisitLimits
from .nearcache import NearCache
from .outbox import Outbox
from .reminders import Reminders
from .retention import Retention
from .revocation import Revocations
from .security import SecretBox, derive_key
from .sms import SmsSender
from .stats import Stats
from .storage import Storage
from .system_settings import SystemSettings
from .visits import Visits
from .wechat import MessageSignatures, WeChatApi, WeChatOAuthService

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
    login_throttle: LoginThrottle
    wechat_users: WeChatUsers
    wechat_sessions: Sessions
    admin_sessions: Sessions
    oauth_states: OAuthStates
    oauth: WeChatOAuthService
    wechat_signatures: MessageSignatures
    system_settings: SystemSettings
    koala: KoalaClient
    images: Images
    sms: SmsSender
    codes: VerificationCodes
    bindings: Bindings
    outbox: Outbox
    gate_cache: GateCache
    revocations: Revocations
    pass_log: PassLog
    visits: Visits
    visit_limits: VisitLimits
    wechat: WeChatApi
    delivery: DeliveryWorker
    sync_redis: SyncRedis
    near: NearCache
    stats: Stats
    reminders: Reminders
    retention: Retention
    gate: Gate
    background: list = dataclasses.field(default_factory=list)

    def start_background(self, interval: float = 60.0) -> None:
        """Start the delivery worker and the periodic jobs that finish what failures left behind."""
        loop = asyncio.get_running_loop()
        self.background.append(loop.create_task(self._periodic(interval)))
        self.background.append(loop.create_task(self.delivery.run()))
        self.background.append(loop.create_task(self.near.listen()))
        self.background.append(loop.create_task(self.near.beat()))
        self.background.append(loop.create_task(self.revocations.follow()))

    async def _periodic(self, interval: float) -> None:
        while True:
            for job in (self.revocations.sweep, self.visits.finish_deletions, self.visits.end_visits,
                        self.outbox.sweep, self.visits.remove_koala_subjects, self.visits.reconcile_koala_subjects,
                        self.visits.sweep_images, self.reminders.run, self.retention.run):
                try:
                    await job()
                except Exception:  # one failed round must not end the loop
                    log.exception("background job %s failed", job.__qualname__)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Stop background work, then release connections and threads."""
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.pass_log.close()
        await self.redis.aclose()
        self.sync_redis.close()
        self.storage.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def redis_client(url: str) -> aioredis.Redis:
    """The asyncio Redis client of a process. Its pool checks a connection it hands out after
    releasing its lock: redis-py's default pool checks under the lock, a few event-loop passes per
    connection, so under load 32 commands at once took a second instead of 90 ms."""
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
        url, decode_responses=True, socket_connect_timeout=3, socket_timeout=5,
        max_connections=64, timeout=5))


async def build_context(config: Config, *, clock: Callable[[], float] = time.time) -> AppContext:
    """Connect to MongoDB and Redis, create indexes, seed API keys and the first admin."""
    if not (config.mongo_uri and config.redis_url and config.secret_key):
        raise ValueError("build_context needs mongo_uri, redis_url and secret_key")
    storage = Storage(config.mongo_uri, config.mongo_db)
    redis = redis_client(config.redis_url)
    executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blocking")
    try:
        await storage.ping()
        await redis.ping()
        await storage.ensure_indexes()
        system_settings = SystemSettings(storage, SecretBox(config.secret_key), clock)
        await system_settings.check_key()
        wechat_users = WeChatUsers(storage, clock)
        koala = KoalaClient(system_settings.koala_account, redis, timeout=config.http_timeout,
                            system=derive_key(config.secret_key, "koala-subject-mark")[:4].hex())
        images = Images(storage, clock)
        sms = SmsSender(config, executor)

        async def code_template() -> str:
            return (await system_settings.templates())["verify_code_sms_id"]

        codes = VerificationCodes(redis, sms, code_template, clock, config.tz)
        outbox = Outbox(storage, clock)
        sync_redis = SyncRedis.from_url(config.redis_url, socket_connect_timeout=3, socket_timeout=5)
        wechat = WeChatApi(config, executor, sync_redis)
        delivery = DeliveryWorker(storage, system_settings, wechat, sms, clock, config.tz)
        outbox.on_write = delivery.wake
        near = NearCache(redis)
        revocations = Revocations(storage, redis, near, clock)
        gate_cache = GateCache(storage, redis, clock, near, revocations.refusal)
        visits = Visits(storage, redis, koala, images, outbox, gate_cache, revocations, system_settings, clock,
                        config.tz)
        bindings = Bindings(storage, koala, images, codes, wechat_users, clock)
        pass_log = PassLog(storage)
        ctx = AppContext(
            config=config,
            storage=storage,
            redis=redis,
            executor=executor,
            clock=clock,
            api_keys=ApiKeys(storage, redis, clock, near),
            admins=Admins(storage, executor, clock),
            login_throttle=LoginThrottle(redis),
            wechat_users=wechat_users,
            wechat_sessions=Sessions(redis, "wechat", config.wechat_session_ttl),
            admin_sessions=Sessions(redis, "admin", config.admin_session_ttl),
            oauth_states=OAuthStates(redis),
            oauth=WeChatOAuthService(config, executor),
            wechat_signatures=MessageSignatures(redis, clock, config.wechat_token),
            system_settings=system_settings,
            koala=koala,
            images=images,
            sms=sms,
            codes=codes,
            bindings=bindings,
            outbox=outbox,
            gate_cache=gate_cache,
            revocations=revocations,
            pass_log=pass_log,
            visits=visits,
            visit_limits=VisitLimits(RateLimiter(redis), clock, config.tz),
            wechat=wechat,
            delivery=delivery,
            sync_redis=sync_redis,
            near=near,
            stats=Stats(storage, visits, clock, config.tz),
            reminders=Reminders(storage, system_settings, outbox, clock, config.tz),
            retention=Retention(storage, system_settings, revocations, images, pass_log, outbox, bindings, clock,
                                config.tz),
            gate=Gate(gate_cache, revocations, pass_log, visits.note_exit, clock),
        )
        await ctx.visits.ensure_longest_visit()
        await ctx.visits.ensure_statuses()
        await ctx.visits.ensure_grams()
        await ctx.bindings.ensure_last_used()
        await ctx.pass_log.upgrade()
        await revocations.upgrade()
        await revocations.read_feed()
        await ctx.api_keys.seed(config.api_keys)
        await ctx.admins.seed(config.admin_username, config.admin_password)
    except BaseException:
        await redis.aclose()
        storage.close()
        executor.shutdown(wait=False)
        raise
    return ctx
