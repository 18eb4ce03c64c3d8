"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and costs a task per request)."""

from __future__ import annotations

import logging
import re
import time
import uuid

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id_var

logger = logging.getLogger("neglect_service.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# Logged instead of the path when no route took the request (unknown paths, bodies refused
# before routing): the raw path may hold anything a caller typed, an NHS number included.
UNROUTED_PATH = "(no route)"


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/children/{child_id}`), never the raw path, whose
    identifiers would put personal data in the access log."""
    template = getattr(scope.get("route"), "path_format", None)
    return template if isinstance(template, str) else UNROUTED_PATH


def add_response_headers(headers: MutableHeaders, path: str) -> None:
    """Headers every response carries. `/v1` answers hold personal data: nothing may store them,
    unless the route chose its own policy (indicators, which are aggregates, revalidate with an
    ETag). `nosniff` stops a browser from reading a JSON or CSV answer as HTML or script."""
    headers["X-Content-Type-Options"] = "nosniff"
    if path.startswith("/v1/") and "cache-control" not in headers:
        headers["Cache-Control"] = "no-store"
    if path == "/odata" or path.startswith("/odata/"):
        # OData 4.0 (Protocol 8.1.5): on every answer, errors included; Power Query decides the
        # protocol version from it.
        headers["OData-Version"] = "4.0"


def _problem(
    status: int, title: str, detail: str, request_id: str, path: str
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "request_id": request_id,
        }
    )
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
    ]
    add_response_headers(MutableHeaders(raw=headers), path)
    return headers, body


class RequestContextMiddleware:
    """Gives every request an id (kept from `X-Request-ID` when safe), logs one line per request
    with the route template (no raw path, query string or body), adds the headers of
    `add_response_headers`, and refuses bodies over the limit with 413."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, upload_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Exact paths that take a file upload, with their own (larger) limit.
        self.upload_limits = upload_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}
        limit = self.upload_limits.get(scope["path"], self.max_body_bytes)

        received = 0
        too_large = False
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal responded
            if too_large:
                # The framework turned our refusal into its own error; answer 413 instead.
                if message["type"] == "http.response.start" and not responded:
                    responded = True
                    await self._too_large(send, request_id, status_holder, scope["path"], limit)
                return
            if message["type"] == "http.response.start":
                responded = True
                status_holder["status"] = message["status"]
                response_headers = MutableHeaders(scope=message)
                response_headers.append("X-Request-ID", request_id)
                add_response_headers(response_headers, scope["path"])
            await send(message)

        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._too_large(send, request_id, status_holder, scope["path"], limit)
                return

            async def receive_limited() -> Message:
                nonlocal received, too_large
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        too_large = True
                        raise _BodyTooLarge
                return message

            try:
                await self.app(scope, receive_limited, send_with_id)
            except _BodyTooLarge:
                if not responded:
                    responded = True
                    await self._too_large(send, request_id, status_holder, scope["path"], limit)
        finally:
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": route_template(scope),
                    "status": status_holder["status"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id_var.reset(token)

    async def _too_large(
        self,
        send: Send,
        request_id: str,
        status_holder: dict[str, int],
        path: str,
        limit: int | None = None,
    ) -> None:
        status_holder["status"] = 413
        headers, body = _problem(
            413,
            "Request body too large",
            f"bodies are limited to {limit or self.max_body_bytes} bytes",
            request_id,
            path,
        )
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
