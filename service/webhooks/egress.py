"""Where a webhook may be delivered: public internet addresses only (issue 12, SSRF safety).

A partner names the URL we POST to, so without care it could make the service call the cloud
metadata endpoint (169.254.169.254), a sidecar's admin port on loopback or any host on the
private network. Two checks stand in the way:

- `check_url`, when a subscription is registered: the URL's form (https, no user name or
  password, a real host) and every address its host resolves to.
- `build_client`, for every delivery: its transport resolves the host when it opens a
  connection, checks every address, and connects to the address it checked. There is no second
  lookup between check and connect, so a name that answers a public address to the check and a
  private one to the connect (DNS rebinding) cannot steer the delivery. The URL is untouched:
  the `Host` header, TLS SNI and certificate verification all use the original name. Redirects
  are never followed (Standard Webhooks counts a 3xx as a failure); were a caller to follow one,
  the next hop would pass the same checks.

Not public means: loopback, link-local (with the metadata endpoints), RFC 1918 private, shared
address space (CGNAT), multicast, unspecified, documentation, benchmarking and reserved ranges;
IPv6 loopback, unique-local, link-local, site-local, multicast and everything outside global
unicast; and any of these reached through an IPv4-mapped, NAT64 or 6to4 IPv6 address.

`Settings.webhook_allowed_networks` admits listed networks all the same (a test receiver on
127.0.0.1), and plain http to them. It is for development and the test suite. The suite runs with
production settings, so production admits loopback networks in it and nothing else: settings
refuse any other network at start-up, and this module drops them in production too. A deployment
leaves it unset (with it, partners could reach the worker's own loopback: a sidecar's admin
port); `build_client` logs a warning when production settings hold one.

With `Settings.webhook_egress_proxy` set, the proxy opens the connections and resolves the names
itself. This module still checks the URL and the addresses the name resolves to here before
handing the request over, but it cannot pin what the proxy connects to: the guard against DNS
rebinding is then the proxy's own deny list (e.g. smokescreen's default of refusing internal
ranges), which the proxy must be configured with. In exchange the workers can sit in a subnet with
no route to internal services at all, and partners' firewalls see the proxy's fixed addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol

import httpcore
import httpx

from service.settings import Settings, is_loopback_network

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TIMEOUT_S = 15.0
"""Standard Webhooks asks for 15 to 30 s; Svix, which partners may compare us with, uses 15."""

MAX_URL_LENGTH = 2048

HOST_NAME_REFUSED = "the host name must resolve to public internet addresses only"
"""One reason for a name that does not resolve and for one that resolves to an internal address,
so that registering URLs cannot probe which internal names exist."""


class DestinationRefused(Exception):
    """A webhook URL, or the address its host resolves to, is not one we deliver to.

    `reason` says why in words safe to show the caller: it never names an address the caller did
    not write (what an internal name resolves to stays unsaid)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Resolver(Protocol):
    """Looks up the addresses of a host name (never called with an address literal)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The event loop's `getaddrinfo`: the system's resolver, hosts file included."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0])) for info in infos))


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), why) for cidr, why in pairs)


# The IANA special-purpose registries, written out rather than left to `ipaddress.is_global`,
# whose answers differ between Python releases (and which calls multicast global).
_SPECIAL_IPV4 = _networks(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved for IETF protocols"),
    ("192.0.2.0/24", "reserved for documentation"),
    ("192.88.99.0/24", "reserved (6to4 relay)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved for benchmarking"),
    ("198.51.100.0/24", "reserved for documentation"),
    ("203.0.113.0/24", "reserved for documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_SPECIAL_IPV6 = _networks(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "reserved (local NAT64)"),
    ("2001::/23", "reserved for IETF protocols"),
    ("2001:db8::/32", "reserved for documentation"),
    ("2002::/16", "a 6to4 tunnel address"),
    ("3fff::/20", "reserved for documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def non_public_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address (`"loopback"`...), or None if it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return non_public_reason(address.ipv4_mapped)
        if address in _NAT64:
            # The gateway translates to the IPv4 address in the last 32 bits.
            return non_public_reason(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
        special = _SPECIAL_IPV6
    else:
        special = _SPECIAL_IPV4
    for network, why in special:
        if address in network:
            return why
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def allowed_networks(settings: Settings) -> Sequence[IPNetwork]:
    """The allow list in force: in production, its loopback networks only, whatever the
    settings say (they refuse anything else at start-up; this covers settings built without
    validation)."""
    listed = settings.webhook_allowed_networks
    if settings.env == "production":
        return [network for network in listed if is_loopback_network(network)]
    return listed


def _admitted(address: IPAddress, allowed: Iterable[IPNetwork]) -> bool:
    forms = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)
    return any(form in network for network in allowed for form in forms)


def _refusal(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    return None if _admitted(address, allowed) else non_public_reason(address)


def _address_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# Letters, digits, hyphens, underscores and dots, as IDNA leaves a name (lower case).
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


def _host(url: httpx.URL) -> str:
    """The host as looked up and as httpcore connects to it: IDNA-encoded, IPv6 unbracketed."""
    return url.raw_host.decode("ascii")


def _check_form(url: httpx.URL) -> None:
    """What the URL itself must be, before any lookup."""
    if url.scheme not in {"https", "http"}:
        raise DestinationRefused("the URL must be an https URL")
    if url.userinfo:
        raise DestinationRefused("the URL must not hold a user name or password")
    host = _host(url)
    if not host:
        raise DestinationRefused("the URL has no host")
    if _address_literal(host) is not None:
        return
    if not _HOST_NAME.fullmatch(host):
        raise DestinationRefused("the host is not a valid host name")
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if last_label.isdigit() or last_label.startswith("0x"):
        # `2130706433`, `127.1`, `0x7f.0.0.1`: no DNS name ends in a number, but the C library
        # reads these as 127.0.0.1. Refused for what they are, not for where they lead.
        raise DestinationRefused("the host must be a host name or an address in standard form")


def _parse(url: str) -> httpx.URL:
    if len(url) > MAX_URL_LENGTH:
        raise DestinationRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise DestinationRefused("the URL is not valid") from None
    _check_form(parsed)
    return parsed


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _check_plain_http(url: httpx.URL, allowed: Sequence[IPNetwork]) -> None:
    """Without an allow list there is no host plain http may go to: refused before a lookup."""
    if url.scheme == "http" and not allowed:
        raise DestinationRefused("the URL must be an https URL")


async def _resolve_name(
    resolver: Resolver, host: str, port: int, timeout: float | None = TIMEOUT_S
) -> list[IPAddress]:
    """The addresses of a host name; OSError (TimeoutError included) when there are none."""
    async with asyncio.timeout(timeout):
        addresses = await resolver.resolve(host, port)
    if not addresses:
        raise OSError(f"no address for {host}")
    return addresses


async def _check_destination(
    url: httpx.URL, allowed: Sequence[IPNetwork], resolver: Resolver
) -> None:
    """Every address the URL's host stands for must be public or allow-listed, and plain http
    is only for allow-listed ones. OSError when the name does not resolve: the caller decides
    whether that is the URL's fault (registration) or the network's (a delivery, retried)."""
    _check_plain_http(url, allowed)
    host = _host(url)
    literal = _address_literal(host)
    if literal is not None:
        addresses = [literal]
        why = _refusal(literal, allowed)
        if why is not None:
            raise DestinationRefused(f"the URL's address is {why}")
    else:
        addresses = await _resolve_name(resolver, host, _port(url))
        if any(_refusal(address, allowed) is not None for address in addresses):
            raise DestinationRefused(HOST_NAME_REFUSED)
    if url.scheme == "http" and not all(_admitted(address, allowed) for address in addresses):
        raise DestinationRefused("the URL must be an https URL")


async def check_url(url: str, settings: Settings, *, resolver: Resolver | None = None) -> None:
    """Refuse (`DestinationRefused`) a webhook URL we would not deliver to: not https (plain
    http only to an allow-listed host), a user name or password in it, or a host that is, or
    resolves to, any address that is not public and not allow-listed."""
    parsed = _parse(url)
    try:
        await _check_destination(parsed, allowed_networks(settings), resolver or SystemResolver())
    except OSError:
        raise DestinationRefused(HOST_NAME_REFUSED) from None


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens httpcore's connections: resolves the host, checks every address, then connects to
    a checked address. httpcore takes SNI and the certificate's name from the request's origin,
    never from what `connect_tcp` was given, so those keep the original name."""

    def __init__(
        self, resolver: Resolver, allowed: Sequence[IPNetwork], *, allowed_only: bool
    ) -> None:
        self._resolver = resolver
        self._allowed = allowed
        # For plain http: only allow-listed addresses, public ones included.
        self._allowed_only = allowed_only
        self._backend = httpcore.AnyIOBackend()

    async def _addresses(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        literal = _address_literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await _resolve_name(self._resolver, host, port, timeout)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        for address in addresses:
            why = _refusal(address, self._allowed)
            if why is not None:
                raise DestinationRefused(
                    f"the URL's address is {why}" if literal is not None else HOST_NAME_REFUSED
                )
        if self._allowed_only and not all(_admitted(a, self._allowed) for a in addresses):
            raise DestinationRefused("the URL must be an https URL")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        addresses = await self._addresses(host, port, timeout)
        failure: Exception = httpcore.ConnectError(f"cannot connect to {host}")
        for address in addresses:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                return await self._backend.connect_tcp(
                    str(address),
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("a unix socket is not a webhook destination")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, exception mapping, pooling), its pool rebuilt
    around `_PinnedBackend`: httpx has no public way to pass a network backend."""

    def __init__(self, backend: _PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, http1=True, http2=False, retries=0)
        if not isinstance(self._pool, httpcore.AsyncConnectionPool):  # pragma: no cover
            raise RuntimeError("httpx no longer keeps its pool in `_pool`: pinning would fail")
        limits = httpx.Limits()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )


class _EgressTransport(httpx.AsyncBaseTransport):
    """Every request's URL is checked; then either a pinned pool connects (https to public or
    allow-listed addresses, plain http to allow-listed ones only), or the egress proxy does."""

    def __init__(self, settings: Settings, resolver: Resolver) -> None:
        self._allowed = allowed_networks(settings)
        self._resolver = resolver
        # Honours SSL_CERT_FILE / SSL_CERT_DIR as httpx does, else certifi's roots. Loading them
        # is the slow part of building a client: once, for every pool.
        tls = httpx.create_ssl_context()
        self._https = _PinnedTransport(
            _PinnedBackend(resolver, self._allowed, allowed_only=False), tls
        )
        self._http = _PinnedTransport(
            _PinnedBackend(resolver, self._allowed, allowed_only=True), tls
        )
        proxy = settings.webhook_egress_proxy
        # The proxy is the operator's: reached as configured, wherever it is.
        self._proxy = (
            None
            if proxy is None
            else httpx.AsyncHTTPTransport(verify=tls, proxy=proxy.get_secret_value())
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _check_form(request.url)
        _check_plain_http(request.url, self._allowed)
        if self._proxy is not None:
            try:
                await _check_destination(request.url, self._allowed, self._resolver)
            except OSError as exc:
                message = f"cannot resolve {_host(request.url)}"
                raise httpx.ConnectError(message, request=request) from exc
            return await self._proxy.handle_async_request(request)
        pinned = self._https if request.url.scheme == "https" else self._http
        return await pinned.handle_async_request(request)

    async def aclose(self) -> None:
        await self._https.aclose()
        await self._http.aclose()
        if self._proxy is not None:
            await self._proxy.aclose()


def build_client(settings: Settings, *, resolver: Resolver | None = None) -> httpx.AsyncClient:
    """The HTTP client webhook deliveries are sent with: redirects not followed, 15 s timeout,
    every connection checked and pinned as this module describes. A refused destination raises
    `DestinationRefused` from `client.post(...)`; a name that does not resolve at send time
    raises `httpx.ConnectError` (the network's fault, worth a retry). Close it (`async with`)."""
    if settings.env == "production" and settings.webhook_allowed_networks:
        logger.warning(
            "NEGLECT_WEBHOOK_ALLOWED_NETWORKS is set in production: webhooks may reach %s",
            ", ".join(str(network) for network in allowed_networks(settings)),
        )
    return httpx.AsyncClient(
        transport=_EgressTransport(settings, resolver or SystemResolver()),
        follow_redirects=False,
        timeout=httpx.Timeout(TIMEOUT_S),
        # No HTTP(S)_PROXY, NO_PROXY or .netrc from the environment: the egress proxy setting is
        # the only way out.
        trust_env=False,
        # No cookies kept: one client sends every subscription's deliveries, and a jar would
        # hand one receiver's session cookie to the next request to its host, whoever's it is.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
