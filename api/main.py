"""The application factory. Nothing connects at import time: the lifespan builds the engine."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI

from service.auth.key_encryption import SigningKeyError, key_encryption_key
from service.auth.keys import KeyRingProvider, ensure_signing_key
from service.auth.tokens import TokenVerifier, external_issuers
from service.db import (
    create_engine,
    create_pool,
    create_session_factory,
    database_url,
    role_statement_timeout_ms,
    startup_refusal_hint,
    transaction,
)
from service.logs import configure_logging
from service.rate_limits import RateLimits
from service.replica import ReadSessions
from service.settings import InvalidSettings, Settings, get_settings

from . import (
    assessments,
    audit,
    case_audits,
    case_events,
    census,
    children,
    clients,
    feed,
    feed_keys,
    health,
    indicators,
    oauth,
    referrals,
    toolkits,
    webhooks,
)
from .deps import enforce_api_quota
from .docs import install_docs
from .errors import install_error_handlers
from .middleware import RequestContextMiddleware
from .openapi import install_openapi
from .responses import problems

logger = logging.getLogger("neglect_service")

API_DESCRIPTION = """\
Shared back end for a children's safeguarding partnership's neglect strategy: Requests for
Support to the Children's Front Door, scored neglect toolkit assessments, case events and the
partnership's indicators. Every caller is a registered machine client holding an OAuth 2.0
client-credentials token from `/oauth/token`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    try:
        # Before any connection: without its key-encryption key the service cannot sign.
        kek = key_encryption_key(settings)
    except SigningKeyError as exc:
        logger.critical("cannot start: %s", exc)
        raise
    url = app.state.database_url or database_url(settings)
    engine = create_engine(settings, url)
    factory = create_session_factory(engine)
    key_ring = KeyRingProvider(factory, kek, settings)
    try:
        async with transaction(factory) as session:
            await ensure_signing_key(session, kek)
        # Loaded now, so that a key this KEK cannot decrypt stops the start, not the first token.
        await key_ring()
    except BaseException as exc:
        hint = startup_refusal_hint(exc)
        if isinstance(exc, SigningKeyError) or hint:
            logger.critical("cannot start: %s", hint or exc)
        await engine.dispose()
        raise
    pool = await create_pool(settings, url)
    if settings.db_pool_mode == "transaction" and await role_statement_timeout_ms(pool) == 0:
        logger.warning(
            "the database role has no statement_timeout: single statements outside a "
            "transaction are cancelled by the client only (ALTER ROLE ... SET statement_timeout)"
        )
    reads = ReadSessions(
        engine,
        # Pinged: a dead replica connection is then found at checkout, where the primary can
        # still take the read, not by the query.
        create_engine(settings, settings.read_database_url, read_only=True, ping=True)
        if settings.read_database_url
        else None,
        settings.read_max_lag_s,
    )
    reads.start()
    http = httpx.AsyncClient(follow_redirects=False)
    rate_limits = RateLimits(pool, settings)
    rate_limits.start()
    app.state.engine = engine
    app.state.session_factory = factory
    app.state.pool = pool
    app.state.reads = reads
    app.state.key_ring = key_ring
    app.state.kek = kek
    app.state.rate_limits = rate_limits
    app.state.token_verifier = TokenVerifier(settings, key_ring, external_issuers(settings, http))
    # Objects built at startup (routes, models, schemas) live as long as the process: moved out
    # of the collector's way, so its full passes stay short under load.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        await rate_limits.close()
        await http.aclose()
        await reads.close()
        await pool.close()
        await engine.dispose()


def _settings_or_exit() -> Settings:
    try:
        return get_settings()
    except InvalidSettings as exc:
        # One line naming the variable, not a traceback through pydantic. Exit code 3 is
        # uvicorn's startup failure: its worker supervisor then stops instead of restarting.
        print(f"neglect-service: {exc}", file=sys.stderr)
        raise SystemExit(3) from None


def create_app(settings: Settings | None = None, database_url: str | None = None) -> FastAPI:
    settings = settings or _settings_or_exit()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="neglect-service",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # Off, these answer 404 like any unknown path; `make openapi` does not need them. The
        # pages themselves are ours (api/docs.py): FastAPI's would load their scripts from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    app.state.database_url = database_url
    # Looks up a webhook URL's host at registration; None is the system's resolver. Tests put a
    # resolver of their own here, so that no test asks the network.
    app.state.webhook_resolver = None
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        upload_limits={census.CENSUS_IMPORTS_PATH: settings.max_census_file_bytes},
    )
    app.include_router(health.router)
    app.include_router(oauth.router)
    for module in (
        referrals,
        children,
        toolkits,
        assessments,
        case_events,
        case_audits,
        indicators,
        clients,
        feed_keys,
        census,
        webhooks,
        audit,
    ):
        app.include_router(
            module.router, dependencies=[Depends(enforce_api_quota)], responses=problems(429)
        )
    app.include_router(feed.router)
    install_openapi(app)
    if app.openapi_url is not None:
        install_docs(app, app.openapi_url)
    return app
