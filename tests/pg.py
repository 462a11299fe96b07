"""A throwaway PostgreSQL server for the many-workers tests (DESIGN.md's recipe): Debian's postgresql package
(`make test` installs it, like chromium), initdb in a temp folder, a random port, stopped at the end. PostgreSQL
refuses to run as root, so as root it runs as the postgres user."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager


def binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server():
    """Yields a postgresql+psycopg2:// URL to a fresh server; stops it and removes its folder after."""
    bindir = binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; `make test` does it as root)")
    d = tempfile.mkdtemp(prefix="compress-pg-")
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(f"{bindir}/initdb", "-D", f"{d}/data", "-A", "trust", "-U", "postgres")
        run(f"{bindir}/pg_ctl", "-D", f"{d}/data", "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1",
            "-l", f"{d}/log", "-w", "start")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", f"{d}/data", "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)
