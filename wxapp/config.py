"""Configuration: every setting the process reads from its environment, in one object."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .auth import KEY_ROLES
from .security import read_or_create_secret

ROLES = tuple(role.value for role in KEY_ROLES)  # what an entry of API_KEYS may be
SMS_BACKENDS = ("aliyun", "log", "off")
LOOPBACK = ("127.0.0.0/8", "::1/128")


class ConfigError(ValueError):
    """A setting in the environment is invalid; the server refuses to start."""


def _base_url(value: str) -> str:
    return value if value.endswith("/") else value + "/"


def parse_api_keys(value: str) -> tuple[tuple[str, str], ...]:
    """Parse `role:key,role:key` into (role, key) pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        role, sep, key = item.partition(":")
        role, key = role.strip(), key.strip()
        if not sep or role not in ROLES or not key:
            raise ConfigError(
                f"API_KEYS entry {item.split(':')[0]!r}... must be role:key with role in {ROLES}"
            )
        pairs.append((role, key))
    return tuple(pairs)


def parse_networks(value: str) -> tuple[str, ...]:
    """Parse TRUSTED_PROXIES: addresses or networks (`10.0.0.5, 10.1.0.0/16, ::1`); `none` for none."""
    if value.strip().lower() == "none":
        return ()
    networks = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ConfigError(f"TRUSTED_PROXIES entry {item!r} is not an IP address or network") from exc
    return tuple(networks)


@dataclasses.dataclass(frozen=True)
class Config:
    """The process configuration (CONTRACT §8); built once at start-up."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./var")
    mongo_uri: str = ""
    mongo_db: str = "visitor"
    redis_url: str = ""
    secret_key: str = ""
    timezone: str = "Asia/Shanghai"
    api_keys: tuple[tuple[str, str], ...] = ()
    admin_username: str = ""
    admin_password: str = ""
    wechat_app_id: str = ""
    wechat_app_secret: str = ""
    wechat_token: str = ""
    wechat_encoding_aes_key: str = ""
    wechat_api_base_url: str = "https://api.weixin.qq.com/"
    wechat_oauth_base_url: str = "https://open.weixin.qq.com/connect/"
    sms_backend: str = "log"
    aliyun_sms_endpoint: str = "dysmsapi.aliyuncs.com"
    aliyun_access_key_id: str = ""
    aliyun_access_key_secret: str = ""
    sms_sign_name: str = ""
    # Seconds an H5 (WeChat) session and an admin session stay valid without use.
    wechat_session_ttl: int = 7 * 24 * 3600
    admin_session_ttl: int = 8 * 3600
    # Seconds allowed for one call to WeChat or another outside service.
    http_timeout: float = 10.0
    # Seconds a client has to send a request's headers, and then its body, before it is disconnected.
    request_timeout: float = 30.0
    # Reverse proxies whose X-Real-Ip / X-Forwarded-For / X-Forwarded-Proto are believed.
    trusted_proxies: tuple[str, ...] = LOOPBACK

    def __post_init__(self):
        if self.sms_backend not in SMS_BACKENDS:
            raise ConfigError(f"SMS_BACKEND must be one of {SMS_BACKENDS}, not {self.sms_backend!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"TIMEZONE {self.timezone!r} is not a known time zone") from exc
        if not 0 < self.port < 65536:
            raise ConfigError(f"PORT {self.port} is out of range")
        if not self.request_timeout > 0:
            raise ConfigError(f"REQUEST_TIMEOUT must be a positive number of seconds, not {self.request_timeout}")
        object.__setattr__(self, "wechat_api_base_url", _base_url(self.wechat_api_base_url))
        object.__setattr__(self, "wechat_oauth_base_url", _base_url(self.wechat_oauth_base_url))

    @property
    def tz(self) -> ZoneInfo:
        """The zone that decides what "today" means."""
        return ZoneInfo(self.timezone)

    @property
    def wechat_configured(self) -> bool:
        """Whether an Official Account is configured for OAuth and messages."""
        return bool(self.wechat_app_id and self.wechat_app_secret)

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        """Build the configuration from environment variables (CONTRACT §8)."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name, default):
            return env.get(name, "").strip() or default

        try:
            port = int(get("PORT", defaults.port))
        except ValueError as exc:
            raise ConfigError(f"PORT must be an integer, not {env.get('PORT')!r}") from exc
        try:
            request_timeout = float(get("REQUEST_TIMEOUT", defaults.request_timeout))
        except ValueError as exc:
            raise ConfigError(f"REQUEST_TIMEOUT must be a number, not {env.get('REQUEST_TIMEOUT')!r}") from exc
        return cls(
            host=get("HOST", defaults.host),
            port=port,
            data_dir=Path(get("DATA_DIR", str(defaults.data_dir))),
            mongo_uri=get("MONGO_URI", ""),
            mongo_db=get("MONGO_DB", defaults.mongo_db),
            redis_url=get("REDIS_URL", ""),
            secret_key=get("SECRET_KEY", ""),
            timezone=get("TIMEZONE", defaults.timezone),
            api_keys=parse_api_keys(env.get("API_KEYS", "")),
            admin_username=get("ADMIN_USERNAME", ""),
            admin_password=env.get("ADMIN_PASSWORD", ""),
            wechat_app_id=get("WECHAT_APP_ID", ""),
            wechat_app_secret=get("WECHAT_APP_SECRET", ""),
            wechat_token=get("WECHAT_TOKEN", ""),
            wechat_encoding_aes_key=get("WECHAT_ENCODING_AES_KEY", ""),
            wechat_api_base_url=get("WECHAT_API_BASE_URL", defaults.wechat_api_base_url),
            wechat_oauth_base_url=get("WECHAT_OAUTH_BASE_URL", defaults.wechat_oauth_base_url),
            sms_backend=get("SMS_BACKEND", defaults.sms_backend).lower(),
            aliyun_sms_endpoint=get("ALIYUN_SMS_ENDPOINT", defaults.aliyun_sms_endpoint),
            aliyun_access_key_id=get("ALIYUN_ACCESS_KEY_ID", ""),
            aliyun_access_key_secret=get("ALIYUN_ACCESS_KEY_SECRET", ""),
            sms_sign_name=get("SMS_SIGN_NAME", ""),
            request_timeout=request_timeout,
            trusted_proxies=parse_networks(get("TRUSTED_PROXIES", ",".join(defaults.trusted_proxies))),
        )

    def with_secret_key(self) -> "Config":
        """Return this configuration with SECRET_KEY set, generating one into DATA_DIR when unset."""
        if self.secret_key:
            return self
        path = self.data_dir / "secret_key"
        if not path.exists():
            # DATA_DIR holds secrets and the embedded databases: only this user may enter it.
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.data_dir, 0o700)
        key = read_or_create_secret(path, lambda: secrets.token_urlsafe(48))
        if not key:
            raise ConfigError(f"{path} is empty: delete it to generate a new SECRET_KEY")
        return dataclasses.replace(self, secret_key=key)
