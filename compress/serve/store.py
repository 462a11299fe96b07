"""The results store: one SQLite file in the data folder (COMPRESS_DATA, default ./data; created on first use), or
any SQLAlchemy URL (COMPRESS_STORAGE, or --storage: postgresql+psycopg2://... when several machines work on one study).
It holds the Optuna studies of the sweeps (sweep.py), every Apply made in the app (tagged with its browser session),
and the job log (a Store: the queue's rows, jobs.py; the local file by default, any URL works): what each server process
was given and how each job ended, so a restarted server shows the jobs it lost as interrupted. All through SQLAlchemy
Core. A store that cannot be opened is one CompressError line; nothing in it is ever deleted by this module but the
job log's oldest rows (Store.interrupt_stale keeps its newest KEEP_JOBS)."""
import functools
import json
import os
import socket
import threading
import time
import warnings
from pathlib import Path, PurePath

from ..errors import CompressError
from .settings import number

_GLOBAL = threading.Lock()

DATA = Path(__file__).resolve().parents[2] / "data"
KEEP_JOBS = 100_000  # rows of the job log kept when a server process starts (older ones are deleted)


class Store:
    """The job log: a SQLite file (a path) or any SQLAlchemy URL, through SQLAlchemy Core like the Applies."""

    def __init__(self, where):
        self.url = str(where) if "://" in str(where) else f"sqlite:///{Path(where)}"
        self._lock = threading.Lock()
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.last_error = ""
        if "://" not in str(where):
            try:
                Path(where).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _fail(self.url, e) from None
        self._engine, self._jobs = _table(self.url, "jobs")

    def record(self, job: dict) -> None:
        """Write a job's row (the queue's log: id, kind, owner, label, state, error, created, started); a store that
        fails here never fails the job (the error is kept in last_error)."""
        t, key = self._jobs, f"{self.host}:{self.pid}:{job['id']}"
        row = {k: job[k] for k in ("kind", "owner", "label", "state", "error", "created", "started")}
        row.update(updated=time.time(), host=self.host, pid=self.pid)
        try:
            with self._lock, self._engine.begin() as db:
                if not db.execute(t.update().where(t.c.key == key).values(**row)).rowcount:
                    db.execute(t.insert().values(key=key, **row))
        except Exception as e:  # noqa: BLE001 - whatever the database said: the job goes on
            self.last_error = str(e)

    def interrupt_stale(self) -> int:
        """Jobs of a server process of this machine that is gone and never ended them: marked interrupted. The log
        keeps its newest KEEP_JOBS rows (it is a log: the results are the Applies' and the sweeps' tables)."""
        t = self._jobs
        with self._lock, self._engine.begin() as db:
            old = db.execute(t.select().with_only_columns(t.c.created).order_by(t.c.created.desc())
                             .offset(KEEP_JOBS).limit(1)).scalar()
            if old is not None:
                db.execute(t.delete().where(t.c.created <= old))
            rows = db.execute(t.select().with_only_columns(t.c.key, t.c.pid).where(
                t.c.state.in_(("queued", "running")), t.c.host == self.host)).all()
            gone = [key for key, pid in rows if pid != self.pid and not alive(pid)]
            if gone:
                db.execute(t.update().where(t.c.key.in_(gone)).values(state="interrupted", updated=time.time()))
        return len(gone)

    def recent(self, n: int = 50, owner: str | None = None) -> list[dict]:
        t = self._jobs
        cols = [t.c[k] for k in ("kind", "owner", "label", "state", "error", "created", "updated")]
        query = t.select().with_only_columns(*cols).order_by(t.c.created.desc()).limit(n)
        with self._lock, self._engine.connect() as db:
            return [dict(r) for r in db.execute(query.where(t.c.owner == owner) if owner else query).mappings()]


def alive(pid: int) -> bool:
    """Is this process of this machine still running (its row of a running job or sweep worker not stale)?"""
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


def heartbeat_s() -> float:
    """A running trial's heartbeat (COMPRESS_HEARTBEAT_S, default 10 s); 3 missed: failed."""
    return number("COMPRESS_HEARTBEAT_S", 10.0, most=3600)


def _connect(url: str) -> dict:
    """How long a connection may wait: SQLite for its lock, PostgreSQL for its server (libpq waits forever)."""
    return {"timeout": LOCK_WAIT_S} if url.startswith("sqlite") else \
        {"connect_timeout": 10} if url.startswith("postgresql") else {}


def optuna_storage(url: str | None = None):
    """The Optuna RDBStorage on the store (one per URL per process), with heartbeats: the running trials of a killed
    worker are marked failed after 3 missed beats, and retried once (RetryHeartbeatStaleTrialCallback)."""
    import optuna
    url = storage_url(url)
    with _GLOBAL:
        if url not in _STORAGES:
            kw = {"connect_args": _connect(url)} | ({} if url.startswith("sqlite") else {"pool_pre_ping": True})
            try:
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.x
                _STORAGES[url] = optuna.storages.RDBStorage(
                    url, engine_kwargs=kw, heartbeat_interval=max(1, round(heartbeat_s())),
                    grace_period=max(3, round(3 * heartbeat_s())),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            except Exception as e:  # noqa: BLE001 - a bad URL, a server that does not answer, a corrupt or locked file
                raise _fail(url, e) from None
        return _STORAGES[url]


@functools.cache
def _schema() -> dict:
    """The store's own tables (beside Optuna's): every Apply made in the app, and the job log."""
    import sqlalchemy as sa
    meta, c, ix = sa.MetaData(), sa.Column, sa.Index  # indexes for every read of a page (no table scan per rerun)
    return {"applies": sa.Table("compress_applies", meta, c("id", sa.Integer, primary_key=True), c("created", sa.Float),
                                c("session", sa.String(64)), c("model", sa.String(300)), c("recipe", sa.Text),
                                c("row", sa.Text), ix("compress_applies_session", "session", "id")),
            "jobs": sa.Table("jobs", meta, c("key", sa.String(300), primary_key=True), c("kind", sa.String(40)),
                             c("owner", sa.String(64)), c("label", sa.Text), c("state", sa.String(20)),
                             c("error", sa.Text), c("created", sa.Float), c("updated", sa.Float),
                             c("host", sa.String(255)), c("pid", sa.Integer), c("started", sa.Float),
                             ix("jobs_created", "created"), ix("jobs_owner_created", "owner", "created"),
                             ix("jobs_state", "state"))}


def _table(url: str, name: str):
    """(engine, table) of the store at url: one engine per URL per process, the table created on its first use (a job
    log written before the started column gains it)."""
    import sqlalchemy as sa
    with _GLOBAL:
        if (url, name) not in _ENGINES:
            try:
                if url not in _ENGINES:
                    _ENGINES[url] = sa.create_engine(url, connect_args=_connect(url))
                engine, table = _ENGINES[url], _schema()[name]
                table.create(engine, checkfirst=True)
                for index in table.indexes:  # a store of before has the table, not its indexes
                    index.create(engine, checkfirst=True)
                if name == "jobs" and "started" not in {col["name"] for col in sa.inspect(engine).get_columns("jobs")}:
                    with engine.begin() as db:  # a store of before
                        db.execute(sa.text("ALTER TABLE jobs ADD COLUMN started FLOAT"))
            except Exception as e:  # noqa: BLE001 - a bad URL, a server that does not answer, not a database
                raise _fail(url, e) from None
            _ENGINES[url, name] = engine, table
        return _ENGINES[url, name]


def record_apply(session: str, model: str, recipe_json: str, row: dict, url: str | None = None) -> None:
    """One Apply made in the app: its browser session, model, recipe and summary row (pipeline.row)."""
    url = storage_url(url)
    engine, table = _table(url, "applies")
    try:
        with engine.begin() as db:
            db.execute(table.insert().values(created=time.time(), session=session, model=model, recipe=recipe_json,
                                             row=json.dumps(row, default=str)))
    except Exception as e:  # noqa: BLE001
        raise _fail(url, e) from None


def applies(session: str | None = None, limit: int = 200, url: str | None = None,
            model: str | None = None) -> list[dict]:
    """The newest Applies first: one session's, or every session's (session None); of one model's name, if given. A
    row this code cannot read (another version's, a half-written one) is left out."""
    import sqlalchemy as sa
    url = storage_url(url)
    engine, table = _table(url, "applies")
    query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if session is not None:
        query = query.where(table.c.session == session)
    if model is not None:
        query = query.where(table.c.model == model)
    try:
        with engine.connect() as db:
            rows = db.execute(query).mappings().all()
    except Exception as e:  # noqa: BLE001
        raise _fail(url, e) from None
    out = []
    for r in rows:
        try:
            row = json.loads(r["row"])
            out.append({"when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
                        "session": str(r["session"])[:8], "model": str(r["model"]), **row, "recipe_json": r["recipe"]})
        except (TypeError, ValueError, OverflowError, OSError):  # not a JSON object, not a time
            continue
    return out
