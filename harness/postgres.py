"""A throwaway PostgreSQL server for the fleet tests: its own cluster in a temporary folder.

:meth:`PostgresCluster.start` finds ``initdb``/``pg_ctl``/``postgres`` (on PATH, else Debian's
/usr/lib/postgresql/<version>/bin), runs ``initdb -A trust -U edgetune`` in a new folder, and starts
the server on a free 127.0.0.1 port with its socket in that folder. As root (initdb refuses to run
as root) the binaries run as the ``postgres`` system user, through ``runuser`` or ``setpriv``.
:meth:`new_database` creates an empty database and returns its URL; :meth:`stop` stops the server
and removes the folder. ``.ci/run`` installs Debian's ``postgresql`` package where initdb is missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

USER = "edgetune"
BINARIES = ("initdb", "pg_ctl", "postgres")
MISSING = ("PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found on PATH or under "
           "/usr/lib/postgresql/*/bin: install them (Debian: apt-get install postgresql; .ci/run does)")


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries, or no way to run them."""


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    on_path = [shutil.which(name) for name in BINARIES]
    if all(on_path):
        return Path(os.path.realpath(on_path[0])).parent  # Debian's PATH entries are links into the versioned bin
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in Path(path).parent.parent.name.split(".") if p.isdigit())
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        bindir = Path(initdb).parent
        if all((bindir / name).exists() for name in BINARIES):
            return bindir
    raise PostgresMissing(MISSING)


def _as_user() -> tuple[list[str], int | None]:
    """The command prefix that drops root to the postgres user, and that user's uid (none when not root)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresMissing("running as root, and there is no 'postgres' user to run the PostgreSQL server as "
                              "(Debian's postgresql package creates it)") from None
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"], user.pw_uid
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"], user.pw_uid
    raise PostgresMissing("running as root, and neither runuser nor setpriv is there to run PostgreSQL as 'postgres'")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One running throwaway server; ``url(db)`` names a database on it."""

    def __init__(self, bindir: Path, root: Path, port: int, prefix: list[str]) -> None:
        self.bindir, self.root, self.port, self.prefix = bindir, root, port, prefix
        self.data, self.log = root / "data", root / "server.log"

    @classmethod
    def start(cls) -> PostgresCluster:
        bindir = find_bindir()
        prefix, uid = _as_user()
        root = Path(tempfile.mkdtemp(prefix="edgetune-pg-"))  # in /tmp: the postgres user can reach it
        if uid is not None:
            os.chown(root, uid, -1)
        cluster = cls(bindir, root, _free_port(), prefix)
        try:
            cluster._run("initdb", "-D", str(cluster.data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-locale",
                         "--no-sync")
            options = (f"-h 127.0.0.1 -p {cluster.port} -k {root} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=200")
            cluster._run("pg_ctl", "-D", str(cluster.data), "-l", str(cluster.log), "-o", options, "-w", "-t", "60",
                         "start")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, binary: str, *args: str) -> None:
        done = subprocess.run([*self.prefix, str(self.bindir / binary), *args], cwd=self.root, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{binary} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = f"fleet_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"create database {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (if it runs) and remove its folder."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], cwd=self.root, capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
