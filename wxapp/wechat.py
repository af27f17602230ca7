"""WeChat through wechatpy: web-page OAuth (the H5 login), template messages and the menu."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Callable

import requests
from wechatpy import WeChatClient
from wechatpy.exceptions import InvalidSignatureException, WeChatException
from wechatpy.oauth import WeChatOAuth
from wechatpy.session import SessionStorage
from wechatpy.session.memorystorage import MemoryStorage
from wechatpy.session.redisstorage import RedisStorage
from wechatpy.utils import check_signature

from .config import Config
from .errors import ApiError
from .privacy import scrub_secrets

log = logging.getLogger(__name__)


class WeChatUnavailable(Exception):
    """WeChat refused or failed a call (its errcode, if any, is in the message)."""


class _OAuth(WeChatOAuth):
    """wechatpy's OAuth client, pointed at the configured base URLs and given a timeout."""

    def __init__(self, config: Config, redirect_uri: str, state: str = ""):
        super().__init__(config.wechat_app_id, config.wechat_app_secret, redirect_uri,
                         scope="snsapi_userinfo", state=state)
        self.API_BASE_URL = config.wechat_api_base_url
        self.OAUTH_BASE_URL = config.wechat_oauth_base_url
        self._timeout = config.http_timeout

    def _request(self, method, url_or_endpoint, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return super()._request(method, url_or_endpoint, **kwargs)


class WeChatOAuthService:
    """Builds authorize URLs and turns a callback `code` into a WeChat user's profile."""

    def __init__(self, config: Config, executor: Executor):
        self.config = config
        self.executor = executor

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """The WeChat page that asks the user to log in (snsapi_userinfo)."""
        return _OAuth(self.config, redirect_uri, state).authorize_url

    async def fetch_user(self, code: str, redirect_uri: str) -> dict:
        """Exchange `code` for the user's openid, nickname and head image (off the event loop)."""
        # A new wechatpy client per login: WeChatOAuth keeps the user's token on the instance.
        oauth = _OAuth(self.config, redirect_uri)

        def exchange():
            token = oauth.fetch_access_token(code)
            info = oauth.get_user_info(token["openid"], token["access_token"])
            return {
                "openid": token["openid"],
                "nickname": info.get("nickname", ""),
                "headimgurl": info.get("headimgurl", ""),
            }

        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, exchange)
        except (WeChatException, requests.RequestException, ValueError, KeyError) as exc:
            # A requests error quotes the URL, with the app secret and the user's code in it.
            message = scrub_secrets(str(exc))
            log.warning("WeChat OAuth exchange failed: %s", message)
            raise WeChatUnavailable(message) from None


class MessageSignatures:
    """The signature WeChat puts on every call to /wechat (`signature`, `timestamp`, `nonce`), with
    replays refused: a timestamp more than 5 minutes away from now, or a nonce already seen within
    that window, is not accepted even when correctly signed."""

    WINDOW = 300  # seconds either side of now

    def __init__(self, redis, clock: Callable[[], float], token: str):
        self.redis = redis
        self.clock = clock
        self.token = token

    async def verify(self, signature: str, timestamp: str, nonce: str) -> None:
        """Accept one signed call (its nonce is used up); 403 when forged, stale or replayed."""
        try:
            if not (self.token and nonce):
                raise InvalidSignatureException()
            check_signature(self.token, signature, timestamp, nonce)
        except InvalidSignatureException:
            raise ApiError(403, "签名无效") from None
        if not timestamp.isdigit() or abs(self.clock() - int(timestamp)) > self.WINDOW:
            raise ApiError(403, "请求时间戳已过期")
        # Kept for both halves of the window, so a nonce cannot come back while its timestamp passes.
        if not await self.redis.set(f"wechat_nonce:{nonce}", "1", nx=True, ex=2 * self.WINDOW):
            raise ApiError(403, "重复的请求")


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout (wechatpy's token fetch passes none)."""

    def __init__(self, timeout: float):
        super().__init__()
        self._timeout = timeout

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return super().request(*args, **kwargs)


class _Client(WeChatClient):
    """wechatpy's client with every URL, the token fetch included, under WECHAT_API_BASE_URL."""

    def __init__(self, config: Config, storage: SessionStorage):
        super().__init__(config.wechat_app_id, config.wechat_app_secret, session=storage,
                         timeout=config.http_timeout)
        self.API_BASE_URL = config.wechat_api_base_url + "cgi-bin/"
        self._http = _TimeoutSession(config.http_timeout)

    def fetch_access_token(self):
        # The parent hard-codes https://api.weixin.qq.com/cgi-bin/token.
        return self._fetch_access_token(
            url=self.API_BASE_URL + "token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


class WeChatSendError(Exception):
    """WeChat refused or failed a call; `errcode` is WeChat's code (None for network and HTTP errors)."""

    def __init__(self, message: str, errcode: int | None):
        super().__init__(message)
        self.errcode = errcode


class WeChatApi:
    """Template messages and the menu through wechatpy; the access token lives in Redis, shared by
    every process; calls run in the executor because wechatpy blocks."""

    def __init__(self, config: Config, executor: Executor, sync_redis=None):
        self.config = config
        self.executor = executor
        # Without Redis (a one-off command next to embedded databases) the token lives in memory.
        storage = RedisStorage(sync_redis, prefix="wechatpy") if sync_redis is not None else MemoryStorage()
        self.client = _Client(config, storage)

    async def _call(self, fn, *args, **kwargs):
        if not self.config.wechat_configured:
            raise WeChatSendError("Official Account not configured", errcode=None)

        def call():
            try:
                return fn(*args, **kwargs)
            except WeChatException as exc:
                raise WeChatSendError(f"{exc.errcode} {exc.errmsg}", getattr(exc, "errcode", None)) from None
            except (requests.RequestException, ValueError) as exc:  # the token URL quotes the app secret
                raise WeChatSendError(scrub_secrets(f"{type(exc).__name__}: {exc}"), None) from None

        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def send_template(self, openid: str, template_id: str, data: dict, url: str) -> dict:
        """Send one template message."""
        return await self._call(self.client.message.send_template, openid, template_id, data, url=url)

    async def create_menu(self, menu: dict) -> dict:
        """Replace the Official Account's menu."""
        return await self._call(self.client.menu.create, menu)
