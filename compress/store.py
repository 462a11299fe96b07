"""The local results store: one SQLite file in the data folder (COMPRESS_DATA, default ./data; created on first
use). Today it keeps the job log (jobs.py): what each server process was given, and how each job ended, so a
restarted server shows the jobs it lost as interrupted. A store that cannot be opened is one CompressError line."""
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

from .errors import CompressError

DATA = Path(__file__).resolve().parent.parent / "data"
_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (key TEXT PRIMARY KEY, kind TEXT, owner TEXT, label TEXT, state TEXT,
             error TEXT, created REAL, updated REAL, host TEXT, pid INTEGER)"""


class Store:
    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.last_error = ""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise CompressError(f"the results store {self.path} cannot be opened: {' '.join(str(e).split())[:200]}") \
                from None

    def _connect(self):
        return sqlite3.connect(self.path, timeout=10)

    def record(self, job) -> None:
        """Write a job's state; a store that fails here never fails the job (the error is kept in last_error)."""
        row = (f"{self.host}:{self.pid}:{job.id}", job.kind, job.owner, job.label, job.state, job.error,
               job.created, time.time(), self.host, self.pid)
        try:
            with self._lock, self._connect() as db:
                db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        except sqlite3.Error as e:
            self.last_error = str(e)

    def interrupt_stale(self) -> int:
        """Jobs of a server process of this machine that is gone and never ended them: marked interrupted."""
        with self._lock, self._connect() as db:
            rows = db.execute("SELECT key, pid FROM jobs WHERE state IN ('queued', 'running') AND host = ?",
                              (self.host,)).fetchall()
            gone = [key for key, pid in rows if pid != self.pid and not _alive(pid)]
            db.executemany("UPDATE jobs SET state = 'interrupted', updated = ? WHERE key = ?",
                           [(time.time(), k) for k in gone])
        return len(gone)

    def recent(self, n: int = 50, owner: str | None = None) -> list[dict]:
        cols = ("kind", "owner", "label", "state", "error", "created", "updated")
        query = f"SELECT {', '.join(cols)} FROM jobs" + (" WHERE owner = ?" if owner else "") + \
            " ORDER BY created DESC LIMIT ?"
        with self._lock, self._connect() as db:
            return [dict(zip(cols, r)) for r in db.execute(query, ((owner,) if owner else ()) + (n,))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True


def default_store() -> Store:
    return Store(Path(os.environ.get("COMPRESS_DATA") or DATA) / "results.sqlite")
