"""The database: tables, engine, and the check that a database's schema is this code's.

Users read it directly (`select * from results`), so the table and column names below are a
contract (DESIGN.md). SQLite is the default; PostgreSQL (`postgresql+psycopg://…`) is the
scale-out path. Both go through the same SQLAlchemy Core tables. The tables below are the schema
at the newest revision of harness.store.migrations (Alembic), which creates and changes them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from harness.store import disk, migrations
from harness.errors import DatabaseFileError, DatabaseUnavailable, HarnessError

DEFAULT_URL = "sqlite:///results.db"
# Where the smoke grid goes unless told otherwise: its demo never mixes with a campaign's results.
DEMO_URL = "sqlite:///demo.db"
SQLITE_BUSY_TIMEOUT_MS = 60_000  # writers wait this long for the write lock before giving up
MIGRATION_LOCK = 0x6861726E  # PostgreSQL advisory lock key held by a schema upgrade ("harn")

metadata = sa.MetaData()

meta = sa.Table(  # key "schema_version": the schema revision's number (harness.store.migrations)
    migrations.META_TABLE, metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # JobSpec.job_id
    sa.Column("grid", sa.String(64), nullable=False),  # the grid that first enqueued it
    sa.Column("spec", sa.Text, nullable=False),  # canonical JSON of the JobSpec
    sa.Column("task", sa.String(64), nullable=False),
    sa.Column("n", sa.Integer),
    sa.Column("noise", sa.Float, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("loss", sa.String(16), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    # the job's state (harness.store.jobs.Status)
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),  # lower runs first
    sa.Column("depends_on", sa.String(32)),  # a job that must be done before this one is claimed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),  # enqueue order
    sa.Column("attempt_id", sa.Integer),  # the attempt holding the lease, while running
    sa.Column("worker", sa.String(128)),
    sa.Column("lease_expires", sa.Float),  # database clock, seconds since the epoch
    sa.Column("progress", sa.Text),  # JSON: epoch, step, total, loss, eta (from the heartbeat)
    sa.Column("error", sa.Text),  # last error line
    sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    sa.Column("updated_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)
sa.Index("ix_jobs_claim", jobs.c.status, jobs.c.priority, jobs.c.seq)
sa.Index("ix_jobs_grid", jobs.c.grid, jobs.c.status)
sa.Index("ix_jobs_depends_on", jobs.c.depends_on)

# One row per attempt of a job: a claim starts one, and it ends with an outcome.
attempts = sa.Table(
    "attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(128), nullable=False),
    sa.Column("host", sa.String(128)),
    sa.Column("pid", sa.Integer),
    sa.Column("device", sa.String(128)),
    sa.Column("versions", sa.Text),  # JSON: python, torch, transformers, ...
    sa.Column("git_rev", sa.String(64)),
    sa.Column("config", sa.Text),  # the resolved configuration the attempt used (JSON)
    sa.Column("started_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    sa.Column("ended_at", sa.DateTime),
    # how the attempt ended (harness.store.jobs.Outcome): running until then
    sa.Column("outcome", sa.String(16), nullable=False, server_default="running"),
    sa.Column("error", sa.Text),  # traceback
)

metrics = sa.Table(
    "metrics", metadata,
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("attempts.id"), nullable=False, index=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("split", sa.String(16), nullable=False),  # train | validation | test
    sa.Column("epoch", sa.Integer),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("step", sa.Integer),  # step-budget jobs (protocol v2): the step a validation ran after
)

results = sa.Table(
    "results", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),  # one per job
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("attempts.id"), nullable=False),
    sa.Column("grid", sa.String(64), nullable=False),
    sa.Column("task", sa.String(64), nullable=False),
    sa.Column("n", sa.Integer),
    sa.Column("noise", sa.Float, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("loss", sa.String(16), nullable=False),
    sa.Column("lam", sa.Float, nullable=False),
    sa.Column("tau", sa.Float),
    sa.Column("scl_reduction", sa.String(8)),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("lr", sa.Float, nullable=False),
    sa.Column("epochs", sa.Integer, nullable=False),
    sa.Column("metric", sa.String(16), nullable=False),  # the task's GLUE metric name
    sa.Column("val_score", sa.Float),  # that metric on validation, at the selected epoch
    sa.Column("test_score", sa.Float),  # that metric on test, at the selected epoch
    sa.Column("val_accuracy", sa.Float),
    sa.Column("test_accuracy", sa.Float),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("n_train", sa.Integer),  # examples actually trained on (noisy copies included)
    sa.Column("n_test", sa.Integer),
    sa.Column("train_seconds", sa.Float),  # training + evaluation (harness.training.runner.RunResult)
    # examples the SCL term sees per step: the largest forward batch (no gradient accumulation,
    # so never more than batch_size, and fewer when the training set is smaller); null: regression
    sa.Column("scl_batch_size", sa.Integer),
    sa.Column("wall_seconds", sa.Float),  # the whole attempt, start-up included
    sa.Column("batching", sa.String(16)),  # fixed | reshuffle | length (JobSpec.batching)
    sa.Column("sampling", sa.String(16)),  # uniform | stratified | full (the whole pool)
    sa.Column("class_counts", sa.Text),  # JSON {"0": 9, "1": 11}: the training sample per class
    sa.Column("spec", sa.Text, nullable=False),  # the full JobSpec JSON
    sa.Column("finished_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    # Protocol v2: the budget in optimizer steps and the step of the selected weights (null: epochs)
    sa.Column("steps", sa.Integer),
    sa.Column("best_step", sa.Integer),
)

# Per-example test predictions of the selected epoch, for example-level significance tests.
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("attempt_id", sa.Integer, nullable=False),
    sa.Column("example", sa.Integer, nullable=False),  # the example's idx in the source split
    sa.Column("label", sa.Float, nullable=False),
    sa.Column("prediction", sa.Float, nullable=False),
)

# The same, packed into one row per job (harness.store.results): what jobs write from schema 3 on, ~20×
# smaller; the table above holds the predictions of jobs stored before.
test_predictions = sa.Table(
    "test_predictions", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("attempt_id", sa.Integer, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("encoding", sa.String(32), nullable=False),  # zlib:int32-delta/int8 (or /float32)
    sa.Column("examples", sa.LargeBinary, nullable=False),  # example idx, as int32 deltas
    sa.Column("labels", sa.LargeBinary, nullable=False),
    sa.Column("predictions", sa.LargeBinary, nullable=False),
)

# The selected model's test-set [CLS] embeddings (float16), for the t-SNE figure: only for the
# jobs harness.store.results.keeps_embeddings names.
embeddings = sa.Table(
    "embeddings", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("attempt_id", sa.Integer, nullable=False),
    sa.Column("split", sa.String(16), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("examples", sa.Text, nullable=False),  # JSON list of example idx, row order
    sa.Column("labels", sa.Text, nullable=False),  # JSON list of labels, row order
    sa.Column("data", sa.LargeBinary, nullable=False),  # float16, C order, rows × dim
)

# Which training examples each job used (so CE and CE+SCL can be checked to match).
train_examples = sa.Table(
    "train_examples", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("examples", sa.Text, nullable=False),  # JSON list of example idx in the train split
)


# Back-translated training sets (Table 3): one row per set, made once and shared by the CE and the
# CE+SCL job of a cell; with how much the noise changed the texts.
noise_sets = sa.Table(
    "noise_sets", metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("task", sa.String(64), nullable=False),
    sa.Column("n", sa.Integer),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("temperature", sa.Float, nullable=False),
    sa.Column("backend", sa.String(64), nullable=False),
    sa.Column("examples", sa.Integer, nullable=False),
    sa.Column("changed_share", sa.Float, nullable=False),
    sa.Column("mean_edit_distance", sa.Float, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),  # time to make it
    sa.Column("made_by_job", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)


# Models kept for other jobs (transfer stage 1): one row per job, replaced when the job runs again;
# written in the same transaction as the job's result.
artifacts = sa.Table(
    "artifacts", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("attempts.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "model"
    sa.Column("path", sa.Text, nullable=False),  # absolute folder: runs/<job_id>/model
    sa.Column("sha256", sa.String(64), nullable=False),  # over the folder's file names and bytes
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)


# Hyper-parameters chosen on validation (harness.tuning): one row per (task, model), replaced when
# chosen again, with the numbers the choice rested on. `harness enqueue --tuned` reads it.
tuning_choices = sa.Table(
    "tuning_choices", metadata,
    # the tuning grid the choice came from: `tune` (protocol v1) or `tune-v2`
    sa.Column("grid", sa.String(64), primary_key=True, server_default="tune"),
    sa.Column("task", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("lr", sa.Float, nullable=False),  # both losses (chosen on CE)
    sa.Column("lam", sa.Float, nullable=False),  # CE+SCL's λ (chosen at that lr)
    sa.Column("tau", sa.Float, nullable=False),  # CE+SCL's τ
    sa.Column("warmup_ratio", sa.Float, nullable=False),  # the schedule the lr was chosen with
    sa.Column("metric", sa.String(16), nullable=False),  # the validation metric averaged
    sa.Column("ce_val_score", sa.Float, nullable=False),  # mean over tuning seeds, chosen CE
    sa.Column("scl_val_score", sa.Float, nullable=False),  # mean over tuning seeds, chosen CE+SCL
    sa.Column("n", sa.Integer),
    sa.Column("seeds", sa.Text, nullable=False),  # JSON list of the tuning seeds
    sa.Column("rule", sa.Text, nullable=False),  # the selection rule, in words
    # JSON list, one entry per setting tried: loss, lr, lam, tau, mean, per-seed scores, job ids
    sa.Column("candidates", sa.Text, nullable=False),
    sa.Column("base", sa.Text, nullable=False),  # JSON: the spec fields every tuning job shared
    sa.Column("chosen_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)


# ---- engine -------------------------------------------------------------------------------

def resolve_url(url: str | None) -> str:
    """`--db`, else $HARNESS_DB, else sqlite:///results.db in the current folder."""
    return url or os.environ.get("HARNESS_DB") or DEFAULT_URL


def make_engine(url: str | None = None, *, readonly: bool = False) -> Engine:
    """An engine for the URL, with a clear HarnessError for URLs that cannot work.

    readonly (SQLite): open the file read-only (status and report on a file they cannot write).
    """
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HarnessError(f"malformed database URL {url!r}: expected e.g. sqlite:///results.db "
                           "or postgresql+psycopg://user@host/dbname") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = None
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).expanduser().resolve()
            if path.is_dir():
                raise HarnessError(f"the database {parsed.database!r} is a folder, not a file: give a "
                                   f"file, e.g. sqlite:///{Path(parsed.database) / 'results.db'}")
            if not path.parent.is_dir():
                raise HarnessError(f"cannot create the database {parsed.database!r}: "
                                   f"folder {path.parent} does not exist")
        args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None}
        if readonly and path is not None:
            engine = sa.create_engine(parsed, creator=lambda: _sqlite_readonly(path, args))
        else:
            engine = sa.create_engine(parsed, connect_args=args)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _SqliteBegin(path, readonly))
        event.listen(engine, "handle_error", _sqlite_file_errors(path))
        return engine
    if backend == "postgresql":
        try:
            engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        except Exception as exc:  # missing driver, bad options
            raise HarnessError(f"cannot use database URL {url!r}: {exc}") from None
        event.listen(engine, "handle_error", _server_lost)
        return engine
    raise HarnessError(f"unsupported database {backend!r} in {url!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_readonly(path: Path, args: dict) -> sqlite3.Connection:
    """A read-only connection that changes nothing on disk. mode=ro first (it sees other
    processes' writes); if that cannot even read (a WAL file in a folder we cannot write, where
    no -shm file can be made), or on a full disk (where it would leave an empty -shm behind), the
    file as it stands (harness.store.disk.readonly_connection)."""
    if disk.full(path) is None:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False, **args)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.OperationalError:
            conn.close()
    return disk.readonly_connection(path, args)


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record) -> None:
    # The driver's own transaction handling is off (isolation_level=None); SQLAlchemy's "begin"
    # event below issues BEGIN IMMEDIATE, so that a writer takes the lock up front and waits on the
    # busy timeout instead of failing on a lock upgrade mid-transaction. Nothing here changes the
    # file: WAL mode is set once, when the harness creates its schema (upgrade), so opening
    # another program's SQLite file leaves it as it was.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")  # with WAL, durable across process crashes
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class _SqliteBegin:
    """The "begin" listener: checks that the file is still the one first opened, then begins.

    An open SQLite connection keeps writing into a file that was deleted or replaced under it
    (the results would vanish with the old inode), so every transaction first compares the path's
    inode with the one seen at the first transaction: a stat call, microseconds."""

    def __init__(self, path: Path | None, readonly: bool):
        self.path, self.readonly, self.identity = path, readonly, None

    def __call__(self, conn) -> None:
        if self.path is not None:
            self.check_file()
        conn.exec_driver_sql("BEGIN" if self.readonly else "BEGIN IMMEDIATE")

    def check_file(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.identity is None:
                return  # not created yet: this connection creates it
            raise DatabaseFileError(f"the database file {self.path} was deleted while in use; "
                                    "nothing more is written to it") from None
        identity = (st.st_dev, st.st_ino)
        if self.identity is None:
            self.identity = identity
        elif identity != self.identity:
            raise DatabaseFileError(f"the database file {self.path} was replaced by another file "
                                    "while in use; nothing more is written to either")
        # Made read-only or immutable meanwhile: writes would pile up in the -wal file, which
        # can never be folded back into the database, so stop writing (access(2) sees chattr +i).
        if not self.readonly and not os.access(self.path, os.W_OK):
            raise DatabaseFileError(f"the database file {self.path} is no longer writable "
                                    "(made read-only or immutable while in use)")


# SQLite errors that mean the file itself is unusable, not a passing lock: -> DatabaseFileError.
SQLITE_FILE_ERRORS = ("malformed", "not a database", "no such table", "readonly database",
                      "disk i/o error", "unable to open database file", "database or disk is full")


def _sqlite_file_errors(path: Path | None):
    def handle(ctx):
        message = str(ctx.original_exception).lower()
        if ctx.is_pre_ping or not any(m in message for m in SQLITE_FILE_ERRORS):
            return None
        where = path or "the in-memory database"
        raise DatabaseFileError(f"the database file {where} is unusable: "
                                f"{_first_line(ctx.original_exception)}{_sqlite_advice(message, where)}")
    return handle


def _sqlite_advice(message: str, where) -> str:
    if "malformed" in message or "not a database" in message:
        return f" (restore it from a copy, or salvage it with `sqlite3 {where} .recover`)"
    if "no such table" in message:
        return " (was it truncated or emptied while in use?)"
    if "readonly" in message:
        return " (read-only or immutable: check its permissions and `lsattr`)"
    space = isinstance(where, Path) and disk.full(where)
    return f" ({space})" if space else ""


def _server_lost(ctx):
    """A PostgreSQL connection lost in the middle of a statement -> DatabaseUnavailable (transient).
    Connection attempts are left to `connect`, and the pool's pre-ping handles its own."""
    if ctx.is_pre_ping or ctx.connection is None:
        return None
    if ctx.is_disconnect or isinstance(ctx.sqlalchemy_exception, OperationalError):
        raise DatabaseUnavailable(f"lost the connection to the database: "
                                  f"{_first_line(ctx.original_exception)}")
    return None


# ---- schema revision (Alembic: harness.store.migrations) ---------------------------------------

def revision(conn) -> str | None:
    """The database's schema revision; None for an empty database. Refuses another program's
    database, and one made by a newer harness."""
    if migrations.schema_version(conn) is None:
        if sa.inspect(conn).get_table_names():
            raise HarnessError(f"{_shown(conn.engine)} holds another program's tables, not a "
                               "harness database: use a new file")
        return None
    current = migrations.revision(conn)
    if not migrations.known(current):
        raise HarnessError(f"the database has schema revision {current}, newer than this harness "
                           f"({migrations.head()}): upgrade the harness")
    return current


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Bring the schema up to `target` (a revision; the newest by default), in one transaction.
    Returns (revision before, revision after)."""
    path = _sqlite_path(engine)
    if path is not None and (problem := _unwritable(path)):  # before SQLite leaves files beside it
        raise DatabaseFileError(f"cannot write the database {path}: {problem}")
    with connect(engine) as conn, conn.begin():
        revision(conn)  # refuse another program's database before touching the file
    if engine.dialect.name == "sqlite":
        _use_wal(engine)
    with connect(engine) as conn, conn.begin():
        if conn.dialect.name == "postgresql":  # two upgraders at once: the second waits, then finds it done
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        before = revision(conn)
        migrations.upgrade(conn, target)
        after = migrations.revision(conn)
    return before, after


def _use_wal(engine: Engine) -> None:
    """WAL journal (a property of the file, kept once set): readers never block the writer, and
    many worker processes share the file. Set outside any transaction, on the harness's own file.

    SQLite answers this pragma "database is locked" at once, without its busy handler, while
    another connection writes to a file still in rollback mode (two upgraders on a new file), so
    it is retried here for as long as any other writer would wait."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    raw = engine.raw_connection()
    try:
        while True:
            try:
                raw.driver_connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    finally:
        raw.close()


def open_db(url: str | None = None, *, create: bool = False, readonly: bool = False) -> Engine:
    """An engine on a database whose schema this code understands.

    create=True creates the schema in an empty database (enqueue does this on first use); an
    empty database otherwise, or one at an older revision always, is refused with a message that
    says what to run: nothing here changes an existing schema (`harness db upgrade` does).
    readonly=True (status, report): a SQLite file this process cannot write is opened read-only;
    without it, such a file is refused with one line (a writer could not store anything).
    """
    engine = make_engine(url)
    database = engine.url.database
    if engine.dialect.name == "sqlite":
        if not database or database == ":memory:":
            raise HarnessError(f"{engine.url} is an in-memory database: nothing would persist; "
                               "give a file, e.g. sqlite:///results.db")
        path = Path(database).expanduser().resolve()
        if not create and not path.exists():
            raise HarnessError(f"{database} does not exist: run `harness enqueue` first "
                               "(or point --db / $HARNESS_DB at your results database)")
        problem = _unwritable(path)
        if problem and readonly:
            engine = make_engine(url, readonly=True)
        elif problem:
            raise DatabaseFileError(f"cannot write the database {path}: {problem}")
    with connect(engine) as conn:
        current = revision(conn)
    if current is None and create:
        upgrade(engine)
        return engine
    if current is None:
        raise HarnessError(f"{_shown(engine)} holds no harness database yet: run `harness enqueue` "
                           "(or `harness db upgrade`) first")
    if current != migrations.head():
        raise HarnessError(f"the database has schema revision {current}, this harness needs "
                           f"{migrations.head()}: run `harness db upgrade --db {_shown(engine)}`")
    return engine


def _sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite database (None: another database, or in memory)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _unwritable(path: Path) -> str | None:
    """Why this process could not write the SQLite file (and its -wal/-shm beside it): its
    permissions, its folder's, or a full disk; or None."""
    if path.exists():
        try:
            with open(path, "r+b"):  # the real test: permissions, read-only mounts, `chattr +i`
                pass
        except OSError as exc:
            return f"{exc.strerror.lower()} (read-only or immutable file?)"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"its folder {path.parent} is not writable (SQLite keeps its journal there)"
    return disk.full(path)


def connect(engine: Engine):
    """engine.connect() with driver errors turned into one clear line."""
    try:
        return engine.connect()
    except OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {engine.url.render_as_string(hide_password=True)}: "
                           f"{_first_line(exc.orig)}") from None
    except DatabaseError as exc:
        raise HarnessError(f"{engine.url.render_as_string(hide_password=True)} is not a usable "
                           f"database: {_first_line(exc.orig)}") from None


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc and str(exc).strip() else type(exc).__name__
