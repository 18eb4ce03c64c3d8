"""PLACEHOLDER until the egress module of branch wt-ssrf is merged (the lead replaces this file).

The agreed interface, and only the scheme check behind it: a URL is refused unless it is https
or its host is an IP address inside `NEGLECT_WEBHOOK_ALLOWED_NETWORKS`. It does NOT resolve
names or refuse private, loopback or link-local addresses, and does not pin the address at
connect time; wt-ssrf's module does all of that.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from service.settings import Settings

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Host name and port to the addresses they resolve to (tests pass a stub)."""


class DestinationRefused(Exception):
    """A webhook URL this service will not send to; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _allow_listed(host: str, settings: Settings) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in settings.webhook_allowed_networks)


async def check_url(url: str, settings: Settings, *, resolver: Resolver | None = None) -> None:
    """Raise `DestinationRefused` for a URL deliveries may not go to."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        raise DestinationRefused("the URL cannot be read") from exc
    if not host:
        raise DestinationRefused("the URL has no host")
    if parts.scheme != "https" and not _allow_listed(host, settings):
        raise DestinationRefused("the URL must be https")


def build_client(settings: Settings, *, resolver: Resolver | None = None) -> httpx.AsyncClient:
    """The HTTP client deliveries are sent with: redirects never followed, 15 s timeout."""
    return httpx.AsyncClient(follow_redirects=False, timeout=15)
