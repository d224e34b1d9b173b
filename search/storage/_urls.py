"""Optuna's SQL storage: URLs and their secrets, opening (with heartbeats), and storage errors in words.

The storage is the single source of truth: what a study stores is written and read in :mod:`.records`.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models  # Optuna's schema: which tables of a database are Optuna's

from wemem.errors import capped

from ..exceptions import StorageError

DEFAULT_STORAGE = "sqlite:///wemem.db"
SQLITE_LOCK_TIMEOUT_S = 60  # parallel trials tell results concurrently; the default 5 s lock timeout is too short

# Optuna's own heartbeat machinery (RDBStorage): each launcher records a heartbeat for each of its RUNNING
# trials every HEARTBEAT_INTERVAL_S seconds; a trial silent for longer than the grace period is failed by the
# next launcher that sweeps (judged on the database's clock) and its setting re-queued.
HEARTBEAT_INTERVAL_S = 5
GRACE_PERIOD_S = 30
MIN_GRACE_PERIOD_S = 2 * HEARTBEAT_INTERVAL_S  # below this a live launcher that misses one beat is swept
MAX_RETRY = 3  # an interrupted setting is re-run at most this many times


_SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token", "sslpassword", "key")


def storage_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("WEMEM_STORAGE") or DEFAULT_STORAGE


def _parse_url(url: str) -> sqlalchemy.engine.URL | None:
    if "://" not in url:
        return None
    try:
        return sqlalchemy.engine.make_url(url)
    except Exception:
        return None


def secrets_of(url: str) -> list[str]:
    """Every secret a URL carries (its password and any password-like query value), longest first."""
    found: list[str] = []
    parsed = _parse_url(url)
    if parsed is not None:
        if parsed.password:
            found.append(str(parsed.password))
        for key, value in parsed.query.items():
            if any(s in key.lower() for s in _SECRET_KEYS):
                found.extend([value] if isinstance(value, str) else list(value))
    else:  # not a URL: whatever sits between the first ':' and the last '@' may be a password
        head = url.rsplit("@", 1)[0] if "@" in url else ""
        if ":" in head:
            found.append(head.split(":", 1)[1])
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact(url: str) -> str:
    """The URL with every secret masked, safe for logs, exports and reports."""
    parsed = _parse_url(url)
    if parsed is None:
        return scrub(url, url) if "@" in url else url
    query = {k: ("***" if any(s in k.lower() for s in _SECRET_KEYS) else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, say) with every secret of ``url`` replaced by ***."""
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


def _sqlite_path(url: sqlalchemy.engine.URL) -> Path | None:
    if not url.drivername.startswith("sqlite") or _in_memory(url):
        return None
    database = url.database
    if not database:
        return None
    if database.startswith("file:"):  # URI form: sqlite:///file:PATH?mode=ro&uri=true
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def _in_memory(url: sqlalchemy.engine.URL) -> bool:
    """``sqlite://``, ``sqlite:///:memory:`` and the URI forms of an in-memory database."""
    database = url.database or ""
    return url.drivername.startswith("sqlite") and (
        not database
        or database == ":memory:"
        or database.startswith("file::memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    )


def check_storage_url(url: str, must_exist: bool = False) -> None:
    """Refuse a URL that cannot work before anything connects; with ``must_exist``, refuse a SQLite file that
    does not exist (read-only commands must not create an empty storage)."""
    parsed = _parse_url(url)
    if parsed is None:
        raise StorageError(
            f"storage URL {redact(url)!r} is not a URL; write it as sqlite:///PATH.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE (--storage or WEMEM_STORAGE)"
        )
    if _in_memory(parsed):
        raise StorageError(
            f"storage {redact(url)!r} is an in-memory SQLite database: everything it holds is lost when "
            "the command ends; pass a file, e.g. --storage sqlite:///wemem.db"
        )
    path = _sqlite_path(parsed)
    if path is None:
        return
    if path.is_dir():
        raise StorageError(
            f"storage path {path} is a folder; name a database file inside it, e.g. "
            f"--storage sqlite:///{path / 'wemem.db'}"
        )
    if must_exist and not path.is_file():
        raise StorageError(
            f"no storage at {path}: no study has been launched there. Launch one with "
            "`wemem launch STUDY.toml`, or pass the storage that holds it with --storage"
        )
    if not path.parent.is_dir():
        raise StorageError(
            f"cannot create the SQLite storage {path}: the folder {path.parent} does not exist; "
            "create it or pass another --storage"
        )
    if path.is_file() and path.stat().st_size and path.read_bytes()[:16] != b"SQLite format 3\x00":
        raise StorageError(f"storage file {path} is not a SQLite database; pass the right --storage")


def new_sqlite_file(url: str) -> Path | None:
    """The SQLite file that opening ``url`` for writing would create (None: it exists, or not SQLite)."""
    parsed = _parse_url(url)
    path = _sqlite_path(parsed) if parsed is not None else None
    return path if path is not None and not path.exists() else None


# Optuna's schema, and the table its schema migrations (alembic) keep their version in
OPTUNA_TABLES = frozenset(models.BaseModel.metadata.tables) | {"alembic_version"}


def foreign_tables(url: str) -> list[str]:
    """The tables of an existing SQLite storage that are not Optuna's: the file is another program's database.
    Reads the schema only, so the file stays as it was."""
    parsed = _parse_url(url)
    path = _sqlite_path(parsed) if parsed is not None else None
    if path is None or not path.is_file():
        return []
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            names = sqlalchemy.inspect(engine).get_table_names()
        finally:
            engine.dispose()
    except Exception as error:  # sqlalchemy/driver errors vary by backend
        raise storage_error(url, error) from None
    return sorted(set(names) - OPTUNA_TABLES)


def refuse_foreign_tables(url: str) -> None:
    """A launcher adds Optuna's tables to a SQLite file: refuse one that holds another program's tables."""
    found = foreign_tables(url)
    if found:
        raise StorageError(
            f"storage {redact(url)} holds tables that are not Optuna's ({', '.join(capped(found))}): "
            "it is another program's database, and launching would add Optuna's tables to it. Pass a "
            "new file with --storage, or --allow-foreign-tables to keep the studies beside those tables"
        )


def open_storage(
    url: str,
    must_exist: bool = False,
    grace_period: int = GRACE_PERIOD_S,
    stale_trial_callback: Any = None,
    writer: bool | None = None,
) -> optuna.storages.RDBStorage:
    """The study storage with Optuna's heartbeats switched on (grace period in seconds).

    ``must_exist`` is for commands that need a stored study: they never create a storage that is not there.
    ``writer`` (default: not ``must_exist``) probes a SQLite storage for writes at once and serializes its
    transactions; read-only commands leave it off, so they also work on a read-only file.
    """
    writer = not must_exist if writer is None else writer
    check_storage_url(url, must_exist)
    if must_exist:
        _require_study_tables(url)
    engine_kwargs: dict[str, Any] = {}
    sqlite = url.startswith("sqlite")
    if sqlite:
        # isolation_level=None: pysqlite issues no BEGIN of its own; _serializable_sqlite issues BEGIN IMMEDIATE
        engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_TIMEOUT_S, "isolation_level": None}
    else:
        engine_kwargs["pool_pre_ping"] = True
    heartbeat: dict[str, Any] = {
        "heartbeat_interval": HEARTBEAT_INTERVAL_S,
        "grace_period": int(grace_period),
        "heartbeat_stale_trial_callback": stale_trial_callback,
    }
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # read-only commands never create Optuna's tables (_require_study_tables checked they exist)
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, skip_table_creation=must_exist, **heartbeat
                )
            if sqlite and writer:
                _serializable_sqlite(storage.engine)
                _probe_writable(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # two launchers creating the schema of an empty database at once: the loser retries and finds it
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
        except Exception as error:  # sqlalchemy/driver errors vary by backend
            raise storage_error(url, error) from None
    raise AssertionError("unreachable")


def _require_study_tables(url: str) -> None:
    """Refuse a database without Optuna's tables (an empty file, another program's database) before Optuna's
    constructor would create its schema in it: read-only commands must leave a storage they were given as it is."""
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            found = sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()
    except Exception as error:  # sqlalchemy/driver errors vary by backend
        raise storage_error(url, error) from None
    if not found:
        raise StorageError(
            f"no studies in storage {redact(url)}: it holds no Optuna tables (an empty or foreign "
            "database), so no study has been launched there. Launch one with `wemem launch STUDY.toml`, "
            "or pass the storage that holds it with --storage"
        )


def _probe_writable(engine: sqlalchemy.engine.Engine) -> None:
    """A writer's SQLite storage must take writes now, before a launcher starts Ray or creates anything: rewrite
    the header's user_version to its own value in a transaction that is rolled back (a read-only file or mount
    refuses it; nothing changes otherwise)."""
    with engine.connect() as connection:
        version = int(connection.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        connection.exec_driver_sql(f"PRAGMA user_version = {version}")
        connection.rollback()


def _serializable_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Every transaction takes SQLite's write lock when it begins (SQLAlchemy's documented pysqlite recipe).

    pysqlite begins a transaction only at the first write, so two launchers can both read a trial as RUNNING
    and both fail it and re-queue its setting; Optuna's "one atomic RUNNING -> FAIL" relies on SELECT ... FOR
    UPDATE, which SQLite ignores. With BEGIN IMMEDIATE the read and the write are one serialized transaction.
    Read-only commands open the storage without this, so they also work on a read-only file.
    """

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def storage_error(url: str, error: BaseException) -> StorageError:
    """A clear, secret-free error for a storage that cannot be opened or written."""
    chain: list[BaseException] = [error]
    while len(chain) < 10 and (cause := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(cause)  # Optuna wraps the driver's own error
    root = next((e for e in reversed(chain) if isinstance(e, sqlalchemy.exc.DBAPIError)), chain[-1])
    reason = scrub(str(getattr(root, "orig", None) or root), url).replace(url, redact(url)).strip().splitlines()
    reason_text = reason[0] if reason else type(error).__name__
    if "readonly" in reason_text.replace("-", "").replace(" ", "").lower():
        return StorageError(
            f"storage {redact(url)} is read-only ({reason_text}); make the file and its folder "
            "writable, or copy it and pass the copy with --storage"
        )
    return StorageError(
        f"cannot open storage {redact(url)}: {reason_text}. Check the URL (--storage or "
        "WEMEM_STORAGE), that the server is running and reachable, and the credentials"
    )
