"""WeChat through wechatpy: web-page OAuth (the Official Account's H5 login)."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import requests
from wechatpy.exceptions import WeChatException
from wechatpy.oauth import WeChatOAuth

from .config import Config

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
            log.warning("WeChat OAuth exchange failed: %s", exc)
            raise WeChatUnavailable(str(exc)) from exc
