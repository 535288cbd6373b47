"""A private PostgreSQL server in a folder of its own, which its owner may stop and restart.

Chaos runs and tests that take the database away must never touch the machine's shared
server (other test runs and CI use it), so they start one of these on a free port of
127.0.0.1, from the server binaries of /usr/lib/postgresql/<version>/bin. PostgreSQL refuses to
run as root, so when this process is root the server runs as the `postgres` OS user
(runuser), which then owns the folder.

    with PrivateCluster(Path("/tmp/run/pg")) as cluster:
        url = cluster.create_database("chaos")
        cluster.restart()
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from scripts import localredis

START_TIMEOUT_SECONDS = 60
SERVER_USER = "postgres"


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder with initdb and pg_ctl, or None."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def available() -> bool:
    """Whether a private cluster can be started here: binaries, and a user to run them as."""
    if server_binaries() is None:
        return False
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return False
    return shutil.which("runuser") is not None


class PrivateCluster:
    """One PostgreSQL server: initdb'd on first start, trust authentication on loopback only."""

    def __init__(self, folder: Path | None = None, port: int | None = None) -> None:
        bin_dir = server_binaries()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bin_dir = bin_dir
        # By default a folder of its own under the temporary directory, which the server's
        # user can reach (a test's tmp_path sits below folders only root may enter).
        self.folder = folder or Path(tempfile.mkdtemp(prefix="jobsys-postgres-"))
        self.data = self.folder / "data"
        self.port = port or localredis.free_port()
        self.server_url = f"postgres://postgres@127.0.0.1:{self.port}"

    def __enter__(self) -> PrivateCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def start(self) -> None:
        """Start the server (creating the cluster the first time) and wait until it answers."""
        if not self.data.exists():
            self._initdb()
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            # A test server: losing data on a machine crash costs nothing here. Not
            # synchronous_commit=off, though: an immediate stop would then lose commits that
            # clients were told about, which is what chaos runs look for.
            "-c fsync=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        log = str(self.folder / "server.log")
        self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_SECONDS), "-o", options, "-l", log)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: `fast` ends sessions cleanly, `immediate` as a crash would."""
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-w", "-m", mode, check=False)

    def restart(self, *, mode: str = "fast") -> None:
        self.stop(mode=mode)
        self.start()

    @property
    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def create_database(self, name: str) -> str:
        """Create an empty database `name` (dropping one so named); return its URL."""
        for statement in (f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'):
            subprocess.run(  # noqa: S603 - our own command line.
                [str(self.bin_dir / "psql"), f"{self.server_url}/postgres", "-q", "-c", statement],
                check=True,
                capture_output=True,
            )
        return f"{self.server_url}/{name}"

    def _initdb(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(self.folder)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
        )  # fmt: skip

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args, check=check)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        if os.geteuid() == 0:
            argv = ("runuser", "-u", SERVER_USER, "--", *argv)
        completed = subprocess.run(  # noqa: S603 - our own command line.
            argv, capture_output=True, check=False, stdin=subprocess.DEVNULL
        )
        if check and completed.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({completed.returncode}):\n"
                f"{completed.stdout.decode(errors='replace')}"
                f"{completed.stderr.decode(errors='replace')}"
            )
        return completed

    def _own(self, folder: Path) -> None:
        """Give the folder to the server's user, who alone may run initdb and the server."""
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(SERVER_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
