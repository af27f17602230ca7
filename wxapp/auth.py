"""Who is calling: roles, API keys, admin users, WeChat users, sessions and OAuth states."""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import hashlib
import hmac
import json
import logging
from concurrent.futures import Executor
from typing import Callable

from . import security
from .errors import ApiError, bad_request, conflict, not_found
from .limits import Limit, RateLimiter
from .nearcache import NearCache
from .storage import ASCENDING, DESCENDING, DuplicateKeyError, Storage

log = logging.getLogger(__name__)


class Role(str, enum.Enum):
    """What a caller may be; handlers declare which roles they accept."""

    PUBLIC = "public"  # anyone at all
    WECHAT = "wechat"  # a WeChat user with an H5 session, bound or not
    VISITOR = "visitor"  # a WeChat user bound as a visitor
    EMPLOYEE = "employee"  # a WeChat user bound to an employee in Koala
    ADMIN = "admin"  # an admin session or an admin API key
    KIOSK = "kiosk"  # a sign-in kiosk's API key
    GATE = "gate"  # a gate's API key


KEY_ROLES = (Role.ADMIN, Role.KIOSK, Role.GATE)
# How admins read the roles of keys, in the order the form offers them.
KEY_ROLE_LABELS = {Role.KIOSK.value: "签到机", Role.GATE.value: "闸机", Role.ADMIN.value: "管理员"}
assert set(KEY_ROLE_LABELS) == {role.value for role in KEY_ROLES}
WECHAT_ROLES = (Role.WECHAT, Role.VISITOR, Role.EMPLOYEE)


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    role: Role
    via: str  # "key", "admin_session" or "wechat_session"
    openid: str = ""
    username: str = ""
    key_id: str = ""
    key_name: str = ""
    binding: dict | None = dataclasses.field(default=None, compare=False, hash=False)


class ApiKeys:
    """API keys for admins, kiosks and gates, stored as SHA-256 hashes."""

    CACHE_TTL = 300  # seconds a key's role stays cached in Redis

    def __init__(self, storage: Storage, redis, clock: Callable[[], float], near: NearCache):
        self.storage = storage
        self.redis = redis
        self.clock = clock
        self.near = near

    @staticmethod
    def _cache_key(key_hash: str) -> str:
        return f"apikey:{key_hash}"

    async def seed(self, pairs) -> None:
        """Make sure every `(role, key)` from API_KEYS exists (idempotent). A key an admin revoked
        stays revoked: a leaked key must not come back with the next restart."""
        for role, key in pairs:
            key_hash = security.hash_api_key(key)
            doc = await self.storage.api_keys.find_one_and_update(
                {"key_hash": key_hash},
                {
                    "$set": {"role": role},
                    "$setOnInsert": {
                        "revoked_at": None,
                        "_id": security.new_token(12),
                        "name": f"{role} (API_KEYS)",
                        "prefix": key[:4],
                        "created_at": self.clock(),
                    },
                },
                upsert=True, return_new=True,
            )
            if doc["revoked_at"]:
                log.warning("API key %r from API_KEYS was revoked in /admin and stays revoked; "
                            "remove it from API_KEYS", doc["name"])
            await self.redis.delete(self._cache_key(key_hash))
            await self.near.changed([self._cache_key(key_hash)])

    async def create(self, role: str, name: str) -> tuple[dict, str]:
        """Create a key; the plain key is returned once and never stored."""
        if role not in {r.value for r in KEY_ROLES}:
            raise bad_request("参数 role 取值无效")
        key = "vk_" + security.new_token(32)
        doc = {
            "_id": security.new_token(12),
            "name": name,
            "role": role,
            "key_hash": security.hash_api_key(key),
            "prefix": key[:7],
            "created_at": self.clock(),
            "revoked_at": None,
        }
        await self.storage.api_keys.insert_one(doc)
        return doc, key

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key at once (its cached role is dropped too); False when it was revoked already,
        404 when there is no such key."""
        doc = await self.storage.api_keys.find_one_and_update(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": self.clock()}}
        )
        if doc is None:
            if await self.storage.api_keys.find_one({"_id": key_id}, {"_id": 1}) is None:
                raise not_found("该 API 密钥不存在")
            return False
        await self.redis.delete(self._cache_key(doc["key_hash"]))
        await self.near.changed([self._cache_key(doc["key_hash"])])
        return True

    async def list(self) -> list[dict]:
        """All keys, newest first, without their hashes."""
        return await self.storage.api_keys.find({}, {"key_hash": 0}, sort=[("created_at", DESCENDING)])

    def authenticate_now(self, key: str, also: list[str] = ()) -> tuple[Principal, dict] | None:
        """What authenticate() answers, from this process's near cache alone, without waiting:
        None when the key or one of the keys in `also` must be read from Redis first."""
        names = [self._cache_key(security.hash_api_key(key)), *also]
        values = [self.near.get(name) for name in names]
        if None in values:
            return None
        return _key_principal(values[0]), dict(zip(also, values[1:]))

    async def authenticate(self, key: str, also: list[str] = ()) -> tuple[Principal | None, dict]:
        """The principal for a presented key (None when unknown or revoked), and the values of the
        Redis keys in `also`, read in the same round trip.

        Calls for the same key and names share one read while it is under way (NearCache.shared)."""
        key_hash = security.hash_api_key(key)
        return await self.near.shared((key_hash, *also), lambda: self._read(key_hash, also))

    async def _read(self, key_hash: str, also: list[str]) -> tuple[Principal | None, dict]:
        names = [self._cache_key(key_hash), *also]
        values = [self.near.get(name) for name in names]
        missing = [name for name, value in zip(names, values) if value is None]
        generation = self.near.generation
        if missing:  # one round trip for whatever this process does not hold
            fetched = dict(zip(missing, await self.redis.mget(missing)))
            for name, value in fetched.items():
                if value is not None:
                    self.near.put(name, value, generation)
            values = [fetched[name] if value is None else value for name, value in zip(names, values)]
        extra = dict(zip(also, values[1:]))
        if values[0]:
            return _key_principal(values[0]), extra
        doc = await self.storage.api_keys.find_one({"key_hash": key_hash})
        if doc is None or doc.get("revoked_at"):
            return None, extra
        cached = json.dumps({"id": doc["_id"], "role": doc["role"], "name": doc.get("name", "")})
        await self.redis.set(self._cache_key(key_hash), cached, ex=self.CACHE_TTL)
        self.near.put(self._cache_key(key_hash), cached, generation)
        return _key_principal(cached), extra


@functools.lru_cache(maxsize=1024)
def _key_principal(cached: str) -> Principal:
    """The (immutable) principal of a key's cached JSON; parsed once per distinct value, as every
    gate scan presents one of a few keys."""
    data = json.loads(cached)
    return Principal(role=Role(data["role"]), via="key", key_id=data["id"], key_name=data["name"])


class Admins:
    """Admin users with scrypt-hashed passwords (hashed in the executor, off the event loop)."""

    def __init__(self, storage: Storage, executor: Executor, clock: Callable[[], float]):
        self.storage = storage
        self.executor = executor
        self.clock = clock

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def seed(self, username: str, password: str) -> bool:
        """Create the first admin from ADMIN_USERNAME/ADMIN_PASSWORD when there is none yet."""
        if not (username and password):
            return False
        if await self.storage.admins.count({}, limit=1):
            return False
        try:
            await self.create(username, password)
        except ApiError:  # another process created it at the same moment
            return False
        log.info("Created the first admin user %r", username)
        return True

    async def create(self, username: str, password: str) -> None:
        """Add an admin; 409 when the name is taken."""
        password_hash = await self._run(security.hash_password, password)
        try:
            await self.storage.admins.insert_one(
                {"_id": username, "password_hash": password_hash, "created_at": self.clock()}
            )
        except DuplicateKeyError:
            raise conflict("该管理员用户名已存在") from None

    async def list(self) -> list[dict]:
        """Every admin user (without the password hash), oldest first."""
        return await self.storage.admins.find({}, {"password_hash": 0}, sort=[("created_at", ASCENDING)])

    async def set_password(self, username: str, password: str) -> bool:
        """Change an admin's password."""
        password_hash = await self._run(security.hash_password, password)
        result = await self.storage.admins.update_one({"_id": username}, {"$set": {"password_hash": password_hash}})
        return result.matched == 1

    async def verify(self, username: str, password: str) -> bool:
        """Whether the password is right; as slow for unknown names as for known ones."""
        doc = await self.storage.admins.find_one({"_id": username})
        stored = doc["password_hash"] if doc else _dummy_hash()
        ok = await self._run(security.verify_password, password, stored)
        return ok and doc is not None


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so timing does not reveal which names exist."""
    return security.hash_password(security.new_token(16))


class LoginThrottle:
    """Admin password tries, counted before the password is checked (so a burst judges no more than
    the limit): 5 per name and address and 20 per address per 15 minutes, and 30 per name per hour
    from addresses the name never logged in from, so that failing on purpose from elsewhere cannot
    keep an admin out of the addresses they use (in Redis, so every process counts together)."""

    WINDOW = 900
    PER_NAME_AND_ADDRESS = 5
    PER_ADDRESS = 20
    NAME_WINDOW = 3600
    PER_NAME = 30
    KNOWN_FOR = 90 * 86400  # an address an admin logged in from stays known this long

    def __init__(self, redis):
        self.redis = redis
        self.limiter = RateLimiter(redis)

    def _known_key(self, username: str) -> str:
        return f"loginknown:{username.lower()}"

    def _limits(self, username: str, address: str, known: bool) -> list[Limit]:
        name = username.lower()
        limits = [Limit(f"loginfail:pair:{name}:{address}", self.PER_NAME_AND_ADDRESS, self.WINDOW,
                        "密码错误次数过多，请 15 分钟后再试"),
                  Limit(f"loginfail:ip:{address}", self.PER_ADDRESS, self.WINDOW, "密码错误次数过多，请 15 分钟后再试")]
        if not known:
            limits.append(Limit(f"loginfail:user:{name}", self.PER_NAME, self.NAME_WINDOW,
                                "该用户名密码错误次数过多，请 1 小时后再试，或在以前登录过的网络中登录"))
        return limits

    async def attempt(self, username: str, address: str) -> str | None:
        """Count a try of `username` from `address`: None when it may be judged, else why not (Chinese)."""
        known = bool(await self.redis.sismember(self._known_key(username), address))
        full = await self.limiter.exhausted(*self._limits(username, address, known))
        return full.message if full else None

    async def succeeded(self, username: str, address: str) -> None:
        """A right password: the try is not held against anyone, the name's tries from this address are
        forgotten, and the address becomes one the name is known at."""
        known = bool(await self.redis.sismember(self._known_key(username), address))
        limits = self._limits(username, address, known)
        await self.limiter.give_back(*limits[1:])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(limits[0].key)
            pipe.sadd(self._known_key(username), address)
            pipe.expire(self._known_key(username), self.KNOWN_FOR)
            await pipe.execute()


class WeChatUsers:
    """WeChat users who have logged in through OAuth (openid, nickname, head image)."""

    def __init__(self, storage: Storage, clock: Callable[[], float]):
        self.storage = storage
        self.clock = clock

    async def save(self, openid: str, nickname: str, headimgurl: str) -> None:
        """Store or refresh a user's profile."""
        now = self.clock()
        await self.storage.wechat_users.update_one(
            {"_id": openid},
            {"$set": {"nickname": nickname, "headimgurl": headimgurl, "updated_at": now},
             "$setOnInsert": {"created_at": now}},
            upsert=True,
        )

    async def get(self, openid: str) -> dict | None:
        """A stored user, or None."""
        return await self.storage.wechat_users.find_one({"_id": openid})


class Sessions:
    """Server-side sessions in Redis; the cookie carries only a random, signed id."""

    def __init__(self, redis, kind: str, ttl: int):
        self.redis = redis
        self.kind = kind
        self.ttl = ttl

    def _key(self, sid: str) -> str:
        return f"session:{self.kind}:{sid}"

    def _owner_key(self, owner: str) -> str:
        return f"sessions_of:{self.kind}:{owner}"

    async def create(self, data: dict, owner: str = "") -> str:
        """Start a session holding `data`; returns its id. An `owner`'s sessions can be ended together."""
        sid = security.new_token(24)
        await self.redis.set(self._key(sid), json.dumps(data), ex=self.ttl)
        if owner:  # remember the session under its owner, forgetting the owner's expired ones
            known = list(await self.redis.smembers(self._owner_key(owner)))
            async with self.redis.pipeline(transaction=False) as pipe:
                for other in known:
                    pipe.exists(self._key(other))
                gone = [other for other, found in zip(known, await pipe.execute()) if not found]
            await self.redis.sadd(self._owner_key(owner), sid)
            if gone:
                await self.redis.srem(self._owner_key(owner), *gone)
        return sid

    async def end_all(self, owner: str, keep: str | None = None) -> int:
        """End every session of `owner` but `keep` (after a password change); returns how many."""
        sids = [sid for sid in await self.redis.smembers(self._owner_key(owner)) if sid != keep]
        if sids:
            await self.redis.delete(*(self._key(sid) for sid in sids))
            await self.redis.srem(self._owner_key(owner), *sids)
        return len(sids)

    async def get(self, sid: str) -> dict | None:
        """The session's data, extending its life (sliding expiry), or None."""
        raw = await self.redis.getex(self._key(sid), ex=self.ttl)
        return json.loads(raw) if raw else None

    async def delete(self, sid: str) -> None:
        """End a session."""
        await self.redis.delete(self._key(sid))


class OAuthStates:
    """One-time OAuth `state` values, each bound to the browser that started the login and
    remembering where to go after it.

    The browser holds a random nonce in a short-lived cookie; the state keeps only its digest. A
    callback whose state was issued to another browser is refused, so nobody can log a victim's
    browser into their own WeChat account by sending them a callback link (login CSRF)."""

    TTL = 600

    def __init__(self, redis):
        self.redis = redis

    @staticmethod
    def _digest(nonce: str) -> str:
        return hashlib.sha256(nonce.encode()).hexdigest()

    async def issue(self, next_url: str, browser_nonce: str) -> str:
        """A fresh state for a login started by the browser holding `browser_nonce`, to end at `next_url`."""
        state = security.new_token(24)
        value = json.dumps({"next": next_url, "browser": self._digest(browser_nonce)})
        await self.redis.set(f"oauth_state:{state}", value, ex=self.TTL)
        return state

    async def consume(self, state: str, browser_nonce: str | None) -> str | None:
        """The `next` URL of a valid state presented by the browser it was issued to; the state is
        used up either way. None when unknown, expired or issued to another browser."""
        if not state:
            return None
        raw = await self.redis.getdel(f"oauth_state:{state}")
        if raw is None:
            return None
        data = json.loads(raw)
        if not browser_nonce or not hmac.compare_digest(data["browser"], self._digest(browser_nonce)):
            log.warning("refused an OAuth callback from a browser that did not start that login")
            return None
        return data["next"]


def safe_next(next_url: str | None, default: str) -> str:
    """`next_url` if it is a path on this site, else `default` (no open redirect)."""
    if not next_url or not next_url.startswith("/") or next_url.startswith(("//", "/\\")):
        return default
    if any(ch in next_url for ch in "\r\n\\") or any(ord(ch) < 32 for ch in next_url):
        return default
    return next_url
