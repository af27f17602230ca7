"""Who the client is when a reverse proxy stands in front: X-Real-Ip, X-Forwarded-For and
X-Forwarded-Proto (or X-Scheme) are believed only on connections from a configured proxy
(TRUSTED_PROXIES). Tornado's `xheaders=True` believes them from anyone, so a client could pick the
address every per-address limit counts under; its `trusted_downstream` helps only along the chain."""
from __future__ import annotations

import ipaddress
from typing import Iterable

import tornado.httpserver
from tornado import httputil


class TrustedProxies:
    """The addresses (networks) whose forwarded headers are believed."""

    def __init__(self, networks: Iterable[str]):
        self.networks = tuple(ipaddress.ip_network(network, strict=False) for network in networks)

    def __contains__(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def client(self, headers: httputil.HTTPHeaders, peer: str) -> str:
        """The client's address as the proxies tell it: X-Real-Ip, else the last address of
        X-Forwarded-For that is not one of our proxies (every one before it could be forged)."""
        real = headers.get("X-Real-Ip", "").strip()
        if _valid(real):
            return real
        hops = [hop.strip() for hop in headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _valid(hop):
                break
            if hop not in self:
                return hop
        return peer

    @staticmethod
    def protocol(headers: httputil.HTTPHeaders, current: str) -> str:
        """http or https, as the nearest proxy says."""
        value = headers.get("X-Scheme", headers.get("X-Forwarded-Proto", "")).split(",")[-1].strip().lower()
        return value if value in ("http", "https") else current


def _valid(ip: str) -> bool:
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


class ProxiedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer, applying forwarded headers only on connections from trusted proxies."""

    def initialize(self, request_callback, *args, trusted_proxies: Iterable[str] = (), **kwargs) -> None:
        kwargs["xheaders"] = False
        super().initialize(request_callback, *args, **kwargs)
        self.trusted_proxies = TrustedProxies(trusted_proxies)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        context = getattr(request_conn, "context", None)
        if context is not None and context.remote_ip in self.trusted_proxies:
            return _Forwarded(delegate, context, self.trusted_proxies)
        return delegate


class _Forwarded(httputil.HTTPMessageDelegate):
    """One request from a trusted proxy: the client's address and protocol are the forwarded ones
    while it is handled (the gate's fast path reads them in headers_received too)."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate, context, proxies: TrustedProxies):
        self.delegate, self.context, self.proxies = delegate, context, proxies
        self.saved = context.remote_ip, context.protocol

    def headers_received(self, start_line, headers):
        self.context.remote_ip = self.proxies.client(headers, self.saved[0])
        self.context.protocol = self.proxies.protocol(headers, self.saved[1])
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.delegate.data_received(chunk)

    def finish(self):
        try:
            self.delegate.finish()
        finally:
            self._restore()

    def on_connection_close(self):
        try:
            self.delegate.on_connection_close()
        finally:
            self._restore()

    def _restore(self) -> None:
        # The next request on this keep-alive connection starts from the proxy's own address again.
        self.context.remote_ip, self.context.protocol = self.saved
