"""The application as built once at start-up: the clients, the services over them, the background runner."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from redis import Redis as SyncRedis
import redis.asyncio as aioredis

from .auth import Admins, ApiKeys, LoginThrottle, OAuthStates, Sessions, WeChatUsers
from .background import Background
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


@dataclasses.dataclass(frozen=True)
class Clients:
    """The configuration, the clock, and the connections and threads every service is built on."""

    config: Config
    clock: Callable[[], float]
    storage: Storage
    redis: aioredis.Redis
    sync_redis: SyncRedis
    executor: ThreadPoolExecutor

    @classmethod
    def open(cls, config: Config, clock: Callable[[], float]) -> Clients:
        """The clients of `config`'s databases; nothing is connected before the first command."""
        return cls(config=config, clock=clock, storage=Storage(config.mongo_uri, config.mongo_db),
                   redis=redis_client(config.redis_url),
                   sync_redis=SyncRedis.from_url(config.redis_url, socket_connect_timeout=3, socket_timeout=5),
                   executor=ThreadPoolExecutor(max_workers=8, thread_name_prefix="blocking"))

    async def close(self) -> None:
        """Release connections and threads."""
        await self.redis.aclose()
        self.sync_redis.close()
        self.storage.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass(frozen=True)
class Services:
    """What handlers use (`self.ctx`): every service, built once over the clients."""

    clients: Clients
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
    near: NearCache
    stats: Stats
    reminders: Reminders
    retention: Retention
    gate: Gate

    # What handlers read besides the services: the configuration, the clock, and a few clients.
    @property
    def config(self) -> Config:
        return self.clients.config

    @property
    def clock(self) -> Callable[[], float]:
        return self.clients.clock

    @property
    def storage(self) -> Storage:
        return self.clients.storage

    @property
    def redis(self) -> aioredis.Redis:
        return self.clients.redis

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self.clients.executor


@dataclasses.dataclass(frozen=True)
class AppContext:
    """The application as built: its clients, the services handlers use, and the background runner."""

    clients: Clients
    services: Services
    background: Background

    async def close(self) -> None:
        """Stop background work, write the gate's last passes, then release connections and threads."""
        await self.background.stop()
        await self.services.pass_log.close()
        await self.clients.close()


def redis_client(url: str) -> aioredis.Redis:
    """The asyncio Redis client of a process. Its pool checks a connection it hands out after
    releasing its lock: redis-py's default pool checks under the lock, a few event-loop passes per
    connection, so under load 32 commands at once took a second instead of 90 ms."""
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
        url, decode_responses=True, socket_connect_timeout=3, socket_timeout=5,
        max_connections=64, timeout=5))


async def build_context(config: Config, *, clock: Callable[[], float] = time.time) -> AppContext:
    """Connect to MongoDB and Redis, create indexes, build every service and the background runner,
    seed API keys and the first admin."""
    if not (config.mongo_uri and config.redis_url and config.secret_key):
        raise ValueError("build_context needs mongo_uri, redis_url and secret_key")
    clients = Clients.open(config, clock)
    try:
        await clients.storage.ping()
        await clients.redis.ping()
        await clients.storage.ensure_indexes()
        services = await build_services(clients)
    except BaseException:
        await clients.close()
        raise
    background = Background(
        loops=[services.delivery.run, services.near.listen, services.near.beat, services.revocations.follow],
        # Each finishes what failures left behind, or keeps stored data within its limits.
        jobs=[services.revocations.sweep, services.visits.finish_deletions, services.visits.end_visits,
              services.outbox.sweep, services.visits.remove_koala_subjects, services.visits.reconcile_koala_subjects,
              services.visits.sweep_images, services.reminders.run, services.retention.run])
    return AppContext(clients, services, background)


async def build_services(clients: Clients) -> Services:
    """Every service, each given what it uses; then bring stored data up to date and seed it."""
    config, storage, redis, executor, clock = (clients.config, clients.storage, clients.redis, clients.executor,
                                               clients.clock)
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
    bindings = Bindings(storage, koala, images, codes, wechat_users, clock)
    # The outbox rings when it writes, the delivery worker answers: one event between them.
    outbox_written = asyncio.Event()
    outbox = Outbox(storage, bindings, clock, on_write=outbox_written.set)
    wechat = WeChatApi(config, executor, clients.sync_redis)
    near = NearCache(redis)
    revocations = Revocations(storage, redis, near, clock)
    gate_cache = GateCache(storage, redis, clock, near, revocations.refusal)
    visits = Visits(storage, redis, koala, images, outbox, bindings, gate_cache, revocations, system_settings,
                    clock, config.tz)
    delivery = DeliveryWorker(outbox, visits, system_settings, wechat, sms, clock, config.tz,
                              wakeup=outbox_written)
    pass_log = PassLog(storage)
    services = Services(
        clients=clients,
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
        near=near,
        stats=Stats(visits, pass_log, clock, config.tz),
        reminders=Reminders(storage, system_settings, outbox, clock, config.tz),
        retention=Retention(storage, system_settings, revocations, images, pass_log, outbox, bindings, clock,
                            config.tz),
        gate=Gate(gate_cache, revocations, pass_log, visits.note_exit, clock),
    )
    await visits.ensure_longest_visit()
    await visits.ensure_statuses()
    await visits.ensure_grams()
    await bindings.ensure_last_used()
    await pass_log.upgrade()
    await revocations.upgrade()
    await revocations.read_feed()
    await services.api_keys.seed(config.api_keys)
    await services.admins.seed(config.admin_username, config.admin_password)
    return services
