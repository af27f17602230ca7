"""Create the Official Account menu: `python -m wxapp.menu --cloud-url https://visit.example.com`."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from redis import Redis

from .config import Config, ConfigError
from .official_account import menu
from .wechat import WeChatApi, WeChatSendError


def main(argv=None) -> int:
    """Print the menu, or send it to WeChat with the account of the environment (WECHAT_APP_ID…)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cloud-url", required=True, help="public address of this system, e.g. https://visit.example.com")
    parser.add_argument("--print", action="store_true", help="only print the menu JSON")
    args = parser.parse_args(argv)
    if not args.cloud_url.startswith(("http://", "https://")):
        parser.error("--cloud-url must start with http:// or https://")
    body = menu(args.cloud_url.rstrip("/"))
    if args.print:
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not config.wechat_configured:
        print("WECHAT_APP_ID and WECHAT_APP_SECRET must be set", file=sys.stderr)
        return 2
    # With REDIS_URL the command shares the servers' access token instead of fetching its own.
    redis = Redis.from_url(config.redis_url) if config.redis_url else None
    with ThreadPoolExecutor(2) as executor:
        api = WeChatApi(config, executor, redis)
        try:
            asyncio.run(api.create_menu(body))
        except WeChatSendError as exc:
            print(f"WeChat refused the menu: {exc}", file=sys.stderr)
            return 1
    print("menu created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
