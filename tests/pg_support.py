"""A real PostgreSQL server for the tests, started from Debian's ``postgresql`` binaries.

Synopsis::

    server = TestPostgres.start()            # initdb into a temporary directory, pg_ctl start
    url = server.create_database()           # a fresh, empty database: postgresql://...
    server.stop()                            # pg_ctl stop, the directory removed

The server listens on a Unix socket in its own directory only (no TCP port), runs without
fsync (a test database need not survive a power cut; the server process itself is never killed
by these tests) and trusts local connections. ``initdb`` refuses to run as root, and CI runs as
root: then the server runs as the ``postgres`` user (or ``nobody``) through ``runuser``, owning
its directory.

The ``postgres_server`` fixture (``tests/conftest.py``) starts one server per test session.
When PostgreSQL cannot start (the package is missing), it fails the tests that need it: `.ci/run`
installs the package.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs
import psycopg

_USER = "wasup"  # the database superuser initdb creates
_counter = itertools.count(1)


def binary(name: str) -> str:
    """The path of PostgreSQL's program ``name``: on PATH, else the newest under
    /usr/lib/postgresql/*/bin (Debian does not put them on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)"
        )
    return candidates[-1]


def _run_as() -> list[str]:
    """The command prefix running a program as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root with neither a postgres nor a nobody user")


def _owner() -> tuple[int, int] | None:
    prefix = _run_as()
    if not prefix:
        return None
    entry = pwd.getpwnam(prefix[2])
    return entry.pw_uid, entry.pw_gid


@attrs.define
class TestPostgres:
    """One PostgreSQL server in a temporary directory (see the module doc)."""

    __test__ = False  # not a test class, whatever its name

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @classmethod
    def start(cls) -> TestPostgres:
        """initdb and start a server; raise RuntimeError saying why when it cannot."""
        root = Path(tempfile.mkdtemp(prefix="wasup-pg-"))
        owner = _owner()
        if owner is not None:
            os.chown(root, *owner)
        server = cls(root)
        try:
            server._command(
                binary("initdb"), "-D", str(server.data), "-U", _USER, "-A", "trust",
                "--no-sync", "-E", "UTF8", "--locale=C",
            )
            server.start_server()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    def start_server(self) -> None:
        """Start (or start again after :meth:`stop_server`) the server, waiting until it takes
        connections."""
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._command(
            binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.root / "server.log"), "-w", "start",
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect every client), keeping its data."""
        self._command(binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop_server("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The connection URL of ``database`` (over the Unix socket)."""
        return f"postgresql://{_USER}@/{database}?host={self.socket_dir}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"test_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name made above, not input
        return self.url(name)

    def _command(self, *args: str) -> None:
        result = subprocess.run(
            [*_run_as(), *args], capture_output=True, text=True, cwd=self.root, check=False
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
                f"\n{tail}"
            )


def wipe(database: str) -> None:
    """Empty the database (every table of the public schema) for the next run."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def renumber(database: str, first: int) -> None:
    """Device ids from ``first`` on: the shared simulator knows a device by its id, and each
    run starts on an empty database."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('devices', 'id'), %s)", (first,))
