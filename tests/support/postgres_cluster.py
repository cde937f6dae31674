"""A throwaway PostgreSQL cluster from the machine's own binaries (Debian's ``postgresql``).

``initdb`` refuses to run as root, so under root (a container) the cluster belongs to an
unprivileged user (:data:`CLUSTER_USER`, created if missing) and its commands run through
``runuser``. The cluster listens on a Unix socket in its own temporary directory only (no TCP
port to collide with), trusts local connections, and skips fsync: it is torn down afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

CLUSTER_USER = "pgtest"
SUPERUSER = "basguard"
DATABASE = "postgres"
PORT = 5432  # only names the socket file, in a directory of its own


class ClusterUnavailable(RuntimeError):
    """PostgreSQL could not be started here (not installed, or it failed)."""


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not versions:
        raise ClusterUnavailable("initdb not found (apt-get install postgresql)")
    return Path(versions[-1]).parent


@dataclass(frozen=True)
class PostgresCluster:
    """A running cluster: connect with :meth:`url`."""

    directory: Path
    bindir: Path
    as_owner: tuple[str, ...]
    durable: bool = False
    """Keep PostgreSQL's defaults (fsync, synchronous commit): for benchmarks. Tests skip them."""

    @property
    def socket_dir(self) -> Path:
        return self.directory

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, *, schema: str | None = None, password: str | None = None) -> str:
        """A libpq URL for the superuser over the socket; ``schema`` as the search path."""
        auth = SUPERUSER if password is None else f"{SUPERUSER}:{quote(password)}"
        query = f"host={quote(str(self.socket_dir), safe='')}&port={PORT}"
        if schema is not None:
            query += f"&options={quote(f'-csearch_path={schema}', safe='')}"
        return f"postgresql://{auth}@/{DATABASE}?{query}"

    def fresh_schema(self) -> str:
        """A URL whose tables go into a new, empty schema: one per test."""
        import psycopg

        schema = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        return self.url(schema=schema)

    def pg_ctl(self, *args: str) -> None:
        log = self.directory / "server.log"
        result = subprocess.run(
            [*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(log),
             "-w", "-t", "120", *args], capture_output=True, text=True, timeout=180, check=False)
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise ClusterUnavailable(f"pg_ctl {' '.join(args)} failed: {result.stderr}\n{tail}")

    def start(self) -> None:
        options = f"-k {self.socket_dir} -p {PORT} -c listen_addresses='' -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self.pg_ctl("-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "stop")


def _owner_prefix() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    try:
        pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        CLUSTER_USER], check=True, capture_output=True, timeout=60)
    return ("runuser", "-u", CLUSTER_USER, "--")


@contextmanager
def running_cluster(*, durable: bool = False) -> Iterator[PostgresCluster]:
    """Start a cluster in a temporary directory; stop and delete it afterwards."""
    bindir = _bindir()
    as_owner = _owner_prefix()
    directory = Path(tempfile.mkdtemp(prefix="basguard-pg-"))
    try:
        if as_owner:
            shutil.chown(directory, CLUSTER_USER, CLUSTER_USER)
        cluster = PostgresCluster(directory, bindir, as_owner, durable)
        init = subprocess.run(
            [*as_owner, str(bindir / "initdb"), "-D", str(cluster.data), "-U", SUPERUSER,
             "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
            capture_output=True, text=True, timeout=300, check=False)
        if init.returncode != 0:
            raise ClusterUnavailable(f"initdb failed: {init.stderr}")
        cluster.start()
        try:
            yield cluster
        finally:
            # Already down if a test stopped it; the directory goes anyway.
            with suppress(ClusterUnavailable):
                cluster.stop("immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
