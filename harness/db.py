"""The database: schema, engine, schema version and migrations.

Users read it directly (`select * from results`), so the table and column names below are a
contract (DESIGN.md). SQLite is the default; PostgreSQL (`postgresql+psycopg://…`) is the
scale-out path. Both go through the same SQLAlchemy Core tables.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from harness.errors import HarnessError

DEFAULT_URL = "sqlite:///results.db"
SCHEMA_VERSION = 3
SQLITE_BUSY_TIMEOUT_MS = 60_000  # writers wait this long for the write lock before giving up

metadata = sa.MetaData()

meta = sa.Table(
    "harness_meta", metadata,
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
    # queued | running | done | failed | cancelled (see harness.queue.Status)
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),  # lower runs first
    sa.Column("depends_on", sa.String(32)),  # a job that must be done before this one is claimed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),  # enqueue order
    sa.Column("run_id", sa.Integer),  # the attempt holding the lease, while running
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

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(128), nullable=False),
    sa.Column("host", sa.String(128)),
    sa.Column("pid", sa.Integer),
    sa.Column("device", sa.String(128)),
    sa.Column("versions", sa.Text),  # JSON: python, torch, transformers, ...
    sa.Column("git_rev", sa.String(64)),
    sa.Column("config", sa.Text),  # the resolved configuration the run used (JSON)
    sa.Column("started_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    sa.Column("ended_at", sa.DateTime),
    # running | done | failed | lost (lease expired) | interrupted (handed back) | abandoned
    # | deferred (handed back unrun: the model it starts from had to be made again)
    sa.Column("outcome", sa.String(16), nullable=False, server_default="running"),
    sa.Column("error", sa.Text),  # traceback
)

metrics = sa.Table(
    "metrics", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("split", sa.String(16), nullable=False),  # train | validation | test
    sa.Column("epoch", sa.Integer),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("value", sa.Float),
)

results = sa.Table(
    "results", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),  # one per job
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
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
    sa.Column("train_seconds", sa.Float),  # training + evaluation
    # examples the SCL term sees per step: the largest forward batch (no gradient accumulation,
    # so never more than batch_size, and fewer when the training set is smaller); null: regression
    sa.Column("scl_batch_size", sa.Integer),
    sa.Column("wall_seconds", sa.Float),  # the whole attempt, start-up included
    sa.Column("batching", sa.String(16)),  # fixed | reshuffle | length (JobSpec.batching)
    sa.Column("sampling", sa.String(16)),  # uniform | stratified | full (the whole pool)
    sa.Column("class_counts", sa.Text),  # JSON {"0": 9, "1": 11}: the training sample per class
    sa.Column("spec", sa.Text, nullable=False),  # the full JobSpec JSON
    sa.Column("finished_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)

# Per-example test predictions of the selected epoch, for example-level significance tests.
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("example", sa.Integer, nullable=False),  # the example's idx in the source split
    sa.Column("label", sa.Float, nullable=False),
    sa.Column("prediction", sa.Float, nullable=False),
)

# The selected model's test-set [CLS] embeddings (float16), for the t-SNE figure.
embeddings = sa.Table(
    "embeddings", metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("split", sa.String(16), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("examples", sa.Text, nullable=False),  # JSON list of example idx, row order
    sa.Column("labels", sa.Text, nullable=False),  # JSON list of labels, row order
    sa.Column("data", sa.LargeBinary, nullable=False),  # float16, C order, rows × dim
)

# Which training examples each run used (so CE and CE+SCL can be checked to match).
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
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "model"
    sa.Column("path", sa.Text, nullable=False),  # absolute folder: runs/<job_id>/model
    sa.Column("sha256", sa.String(64), nullable=False),  # over the folder's file names and bytes
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime, server_default=sa.func.current_timestamp()),
)


# ---- engine -------------------------------------------------------------------------------

def resolve_url(url: str | None) -> str:
    """`--db`, else $HARNESS_DB, else sqlite:///results.db in the current folder."""
    return url or os.environ.get("HARNESS_DB") or DEFAULT_URL


def make_engine(url: str | None = None) -> Engine:
    """An engine for the URL, with a clear HarnessError for URLs that cannot work."""
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HarnessError(f"malformed database URL {url!r}: expected e.g. sqlite:///results.db "
                           "or postgresql+psycopg://user@host/dbname") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().resolve().parent
            if not folder.is_dir():
                raise HarnessError(f"cannot create the database {parsed.database!r}: "
                                   f"folder {folder} does not exist")
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                        "isolation_level": None})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        try:
            return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        except Exception as exc:  # missing driver, bad options
            raise HarnessError(f"cannot use database URL {url!r}: {exc}") from None
    raise HarnessError(f"unsupported database {backend!r} in {url!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record) -> None:
    # The driver's own transaction handling is off (isolation_level=None); SQLAlchemy's "begin"
    # event below issues BEGIN IMMEDIATE, so that a writer takes the lock up front and waits on the
    # busy timeout instead of failing on a lock upgrade mid-transaction.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, many processes share
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL keeps this durable across process crashes
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_on_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# ---- schema version -----------------------------------------------------------------------

def schema_version(conn) -> int | None:
    """The version recorded in the database; None for an empty database."""
    if not sa.inspect(conn).has_table(meta.name):
        return None
    row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else None


def _add_missing(conn) -> None:
    """Create the tables, and add the nullable columns, that an older schema lacks."""
    metadata.create_all(conn)  # checkfirst: only tables that do not exist yet
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}')


# Migrations: version -> function(conn) that brings version-1 to version.
MIGRATIONS = {
    1: lambda conn: metadata.create_all(conn),
    2: _add_missing,  # noise_sets and artifacts tables, results.scl_batch_size, jobs.depends_on index
    3: _add_missing,  # results.batching, results.sampling, results.class_counts
}


def upgrade(engine: Engine) -> tuple[int | None, int]:
    """Bring the schema up to SCHEMA_VERSION. Returns (version before, version after)."""
    with connect(engine) as conn, conn.begin():
        before = schema_version(conn)
        if before is None and sa.inspect(conn).get_table_names():
            raise HarnessError("this database holds tables that are not the harness's: "
                               "use an empty database or a new file")
        if before is not None and before > SCHEMA_VERSION:
            raise HarnessError(f"the database has schema version {before}, newer than this "
                               f"harness ({SCHEMA_VERSION}): upgrade the harness")
        for v in range((before or 0) + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[v](conn)
        _set_version(conn, SCHEMA_VERSION)
    return before, SCHEMA_VERSION


def _set_version(conn, version: int) -> None:
    conn.execute(sa.delete(meta).where(meta.c.key == "schema_version"))
    conn.execute(sa.insert(meta).values(key="schema_version", value=str(version)))


def open_db(url: str | None = None, *, create: bool = False) -> Engine:
    """An engine on a database whose schema this code understands.

    create=True creates the schema in an empty database (enqueue does this on first use);
    otherwise an empty or out-of-date database is refused with a message that says what to run.
    """
    engine = make_engine(url)
    database = engine.url.database
    if (not create and engine.dialect.name == "sqlite" and database and database != ":memory:"
            and not Path(database).expanduser().exists()):
        raise HarnessError(f"{database} does not exist: run `harness enqueue` first "
                           "(or point --db / $HARNESS_DB at your results database)")
    with connect(engine) as conn:
        version = schema_version(conn)
    if version is None and create:
        upgrade(engine)
        return engine
    if version is None:
        raise HarnessError(f"{engine.url.render_as_string(hide_password=True)} holds no harness "
                           "database yet: run `harness enqueue` (or `harness db upgrade`) first")
    if version < SCHEMA_VERSION:
        raise HarnessError(f"the database has schema version {version}, this harness needs "
                           f"{SCHEMA_VERSION}: run `harness db upgrade`")
    if version > SCHEMA_VERSION:
        raise HarnessError(f"the database has schema version {version}, newer than this harness "
                           f"({SCHEMA_VERSION}): upgrade the harness")
    return engine


def connect(engine: Engine):
    """engine.connect() with driver errors turned into one clear line."""
    try:
        return engine.connect()
    except OperationalError as exc:
        raise HarnessError(f"cannot connect to {engine.url.render_as_string(hide_password=True)}: "
                           f"{_first_line(exc.orig)}") from None
    except DatabaseError as exc:
        raise HarnessError(f"{engine.url.render_as_string(hide_password=True)} is not a usable "
                           f"database: {_first_line(exc.orig)}") from None


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc and str(exc).strip() else type(exc).__name__
