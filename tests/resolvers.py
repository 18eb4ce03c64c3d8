"""A resolver for the API tests: webhook URLs on the reserved `.example` names (RFC 2606) resolve
to one public address, so registering them never asks the network; any other name does not
resolve. The egress tests (tests/service/test_webhook_egress.py) script their own lookups."""

from __future__ import annotations

import ipaddress
import socket
from typing import Final

from service.webhooks.egress import IPAddress

PUBLIC_ADDRESS: Final = ipaddress.ip_address("93.184.215.14")
"""A global unicast address (once example.com's); never connected to: registration only looks."""


class ExampleNamesResolver:
    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        if host == "example" or host.endswith(".example"):
            return [PUBLIC_ADDRESS]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
