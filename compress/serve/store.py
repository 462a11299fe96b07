"""The results store: one SQLite file in the data folder (COMPRESS_DATA, default ./data; created on first use), or
any SQLAlchemy URL (COMPRESS_STORAGE, or --storage: postgresql+psycopg2://... when several machines work on one study).
It holds the Optuna studies of the sweeps (sweep.py), every Apply made in the app (tagged with its browser session),
and, in the local file, the job log (the queue's rows, jobs.py): what each server process was given and how each job ended, so a
restarted server shows the jobs it lost as interrupted. A store that cannot be opened is one CompressError line;
nothing in it is ever deleted by this module."""
import json
import os
import socket
import sqlite3
import threading
import time
import warnings
from pathlib import Path, PurePath

from ..errors import CompressError

_GLOBAL = threading.Lock()

DATA = Path(__file__).resolve().parents[2] / "data"
_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (key TEXT PRIMARY KEY, kind TEXT, owner TEXT, label TEXT, state TEXT,
             error TEXT, created REAL, updated REAL, host TEXT, pid INTEGER, started REAL)"""


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
                if "started" not in {r[1] for r in db.execute("PRAGMA table_info(jobs)")}:  # a store of before
                    db.execute("ALTER TABLE jobs ADD COLUMN started REAL")
        except (OSError, sqlite3.Error) as e:
            raise CompressError(f"the results store {self.path} cannot be opened: {' '.join(str(e).split())[:200]}") \
                from None

    def _connect(self):
        return sqlite3.connect(self.path, timeout=10)

    def record(self, job: dict) -> None:
        """Write a job's row (the queue's log: id, kind, owner, label, state, error, created, started); a store that
        fails here never fails the job (the error is kept in last_error)."""
        row = (f"{self.host}:{self.pid}:{job['id']}", job["kind"], job["owner"], job["label"], job["state"],
               job["error"], job["created"], time.time(), self.host, self.pid, job["started"])
        try:
            with self._lock, self._connect() as db:
                db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
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


def data_dir() -> Path:
    return Path(os.environ.get("COMPRESS_DATA") or DATA)


def default_store() -> Store:
    return Store(data_dir() / "results.sqlite")


def storage_url(url: str | None = None) -> str:
    """The results store's URL: the given one, else COMPRESS_STORAGE, else the SQLite file in the data folder."""
    url = (url or os.environ.get("COMPRESS_STORAGE") or "").strip()
    if not url:
        (d := data_dir()).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{d / 'results.sqlite'}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def shown(url: str) -> str:
    """A URL fit to print, to a visitor too: its password hidden, a SQLite file by its name only (the app printed
    the server's absolute data folder to every visitor)."""
    from sqlalchemy.engine import make_url
    try:
        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            return f"sqlite:///.../{PurePath(u.database or 'memory').name}"
        return u.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: the error that follows says so
        return url[:80]


def _fail(url, e) -> CompressError:
    text = " ".join(str(getattr(e, "orig", None) or e).split())
    return CompressError(f"the results store {shown(url)} cannot be opened: {text[:200]}")


_STORAGES: dict = {}
_ENGINES: dict = {}
LOCK_WAIT_S = 30.0  # how long a write waits for a SQLite file another process holds, then says so
HEARTBEAT_S = float(os.environ.get("COMPRESS_HEARTBEAT_S", "10"))  # a running trial's heartbeat; 3 missed: failed


def optuna_storage(url: str | None = None):
    """The Optuna RDBStorage on the store (one per URL per process), with heartbeats: the running trials of a killed
    worker are marked failed after 3 missed beats, and retried once (RetryHeartbeatStaleTrialCallback)."""
    import optuna
    url = storage_url(url)
    with _GLOBAL:
        if url not in _STORAGES:
            kw = {"connect_args": {"timeout": LOCK_WAIT_S}} if url.startswith("sqlite") else {"pool_pre_ping": True}
            try:
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.x
                _STORAGES[url] = optuna.storages.RDBStorage(
                    url, engine_kwargs=kw, heartbeat_interval=max(1, round(HEARTBEAT_S)),
                    grace_period=max(3, round(3 * HEARTBEAT_S)),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            except Exception as e:  # noqa: BLE001 - a bad URL, a server that does not answer, a corrupt or locked file
                raise _fail(url, e) from None
        return _STORAGES[url]


def _applies(url):
    import sqlalchemy as sa
    with _GLOBAL:
        if url not in _ENGINES:
            meta = sa.MetaData()
            table = sa.Table("compress_applies", meta, sa.Column("id", sa.Integer, primary_key=True),
                             sa.Column("created", sa.Float), sa.Column("session", sa.String(64)),
                             sa.Column("model", sa.String(300)), sa.Column("recipe", sa.Text), sa.Column("row", sa.Text))
            try:
                engine = sa.create_engine(url, **({"connect_args": {"timeout": LOCK_WAIT_S}} if url.startswith("sqlite") else {}))
                meta.create_all(engine)
            except Exception as e:  # noqa: BLE001
                raise _fail(url, e) from None
            _ENGINES[url] = engine, table
        return _ENGINES[url]


def record_apply(session: str, model: str, recipe_json: str, row: dict, url: str | None = None) -> None:
    """One Apply made in the app: its browser session, model, recipe and summary row (pipeline.row)."""
    url = storage_url(url)
    engine, table = _applies(url)
    try:
        with engine.begin() as db:
            db.execute(table.insert().values(created=time.time(), session=session, model=model, recipe=recipe_json,
                                             row=json.dumps(row, default=str)))
    except Exception as e:  # noqa: BLE001
        raise _fail(url, e) from None


def applies(session: str | None = None, limit: int = 200, url: str | None = None) -> list[dict]:
    """The newest Applies first: one session's, or every session's (session None)."""
    import sqlalchemy as sa
    url = storage_url(url)
    engine, table = _applies(url)
    query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if session is not None:
        query = query.where(table.c.session == session)
    try:
        with engine.connect() as db:
            rows = db.execute(query).mappings().all()
    except Exception as e:  # noqa: BLE001
        raise _fail(url, e) from None
    return [{"when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])), "session": r["session"][:8],
             "model": r["model"], **json.loads(r["row"]), "recipe_json": r["recipe"]} for r in rows]
