"""The embedded PostgreSQL: `neglect-service db stop` and `make clean` stop the server whatever
ended the processes that used it, and say so only when it has stopped (issue 11).

Each test starts its own server in a short temporary folder (its unix socket lives there), so the
test database and any `.pgdata` of the checkout are left alone.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.embedded import embedded_server_pid, ensure_embedded_server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90.0


@pytest.fixture
def pgdata() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ngt", dir="/tmp"))
    try:
        yield folder / "pg"
    finally:
        # Whatever the test did, leave no server behind.
        pid = embedded_server_pid(folder / "pg")
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(folder, ignore_errors=True)


def cli_environment(pgdata: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "NEGLECT_DATABASE_URL", "NEGLECT_ENV"}
    }
    env["NEGLECT_EMBEDDED_PGDATA"] = str(pgdata)
    # Given, so that no key file is written into the checkout.
    env["NEGLECT_KEY_ENCRYPTION_KEY"] = base64.b64encode(os.urandom(32)).decode()
    return env


def db_stop(pgdata: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own CLI, no shell)
        [str(BIN / "neglect-service"), "db", "stop"],
        env=cli_environment(pgdata),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_db_stop_stops_a_server_whose_user_was_killed(pgdata: Path) -> None:
    """A process ended by SIGTERM stays in the library's list of the server's users; `db stop`
    used to see a user left, keep the server running, and print that it had stopped it."""
    attached = subprocess.Popen(  # noqa: S603 (our own interpreter, no shell)
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from service.embedded import ensure_embedded_server;"
            "ensure_embedded_server(Path(sys.argv[1])); print('attached', flush=True);"
            "time.sleep(120)",
            str(pgdata),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert attached.stdout is not None
    with attached.stdout:
        assert attached.stdout.readline().strip() == "attached"
    attached.send_signal(signal.SIGTERM)
    assert attached.wait(timeout=30) == -signal.SIGTERM
    postmaster = embedded_server_pid(pgdata)
    assert postmaster is not None
    assert attached.pid in json.loads((pgdata / ".handle_pids.json").read_text())

    stopped = db_stop(pgdata)

    assert stopped.returncode == 0, stopped.stderr
    assert "embedded server" in stopped.stdout
    assert "stopped" in stopped.stdout
    assert not process_alive(postmaster)
    assert embedded_server_pid(pgdata) is None
    again = db_stop(pgdata)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "no embedded server running"


def test_db_stop_does_not_claim_a_stop_for_a_stale_pid_file(pgdata: Path) -> None:
    ensure_embedded_server(pgdata)
    postmaster = embedded_server_pid(pgdata)
    assert postmaster is not None
    # A server killed outright leaves postmaster.pid behind, naming a process that is gone.
    os.kill(postmaster, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process_alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (pgdata / "postmaster.pid").exists()

    result = db_stop(pgdata)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no embedded server running"


def test_make_clean_after_a_sigterm_stopped_service_leaves_no_postgresql_running(
    pgdata: Path,
) -> None:
    """What `make run` then Ctrl-C or `kill` then `make clean` does, with a real service."""
    port = free_port()
    service = subprocess.Popen(  # noqa: S603 (our own CLI, no shell)
        [str(BIN / "neglect-service"), "dev", "--port", str(port)],
        cwd=pgdata.parent,
        env=cli_environment(pgdata),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert service.poll() is None, "the service exited before it served"
            assert time.monotonic() < deadline, "the service did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        postmaster = embedded_server_pid(pgdata)
        assert postmaster is not None
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
    # The server outlives the service on purpose (it is shared); `make clean` is what stops it.
    assert process_alive(postmaster)

    # make from PATH, as a developer runs it, on the project's own Makefile; no shell.
    clean = subprocess.run(  # noqa: S603
        ["make", "-s", "--no-print-directory", "clean", f"VENV={sys.prefix}"],  # noqa: S607
        cwd=ROOT,
        env={**cli_environment(pgdata), "NEGLECT_EMBEDDED_PGDATA": str(pgdata)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "stopped" in clean.stdout
    assert not process_alive(postmaster)
    assert not pgdata.exists()
