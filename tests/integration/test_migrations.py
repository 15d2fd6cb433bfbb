"""Schema migrations (Alembic, harness.store.migrations) on SQLite files and PostgreSQL: a database made
before Alembic upgrades to head with every row intact, a second upgrade changes nothing, the
revisions build exactly the tables harness.store.db declares, and workers refuse a database below head
with the command that fixes it."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from harness.store import db, migrations
from harness.cli import app
from harness.errors import HarnessError

# A schema-4 database as the harness made it before Alembic (main ffc4759): its DDL on each
# dialect and every row, real rows of the campaign among them (see rows.json's "about").
SCHEMA4 = Path(__file__).parent / "fixtures" / "schema4"
# What revision 0005 renamed: the fixture's names -> today's (an attempt of a job is an attempt).
RENAMED_TABLES = {"runs": "attempts"}
RENAMED_COLUMNS = {"run_id": "attempt_id"}
cli = CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("pg_url")


def load_schema4(url: str) -> sa.Engine:
    """The fixture's schema and rows in the (empty) database at `url`, written without the
    harness: plain DDL and inserts, as the old code left them."""
    engine = db.make_engine(url)
    lines = (SCHEMA4 / f"{engine.dialect.name}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    tables = json.loads((SCHEMA4 / "rows.json").read_text())["tables"]
    with engine.begin() as conn:
        for statement in filter(str.strip, ddl.split(";")):
            conn.exec_driver_sql(statement)
        for name, t in tables.items():  # in the order of the foreign keys
            if t["rows"]:
                table = sa.table(name, *map(sa.column, t["columns"]))
                conn.execute(table.insert(), [dict(zip(t["columns"], map(_value, row))) for row in t["rows"]])
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequence past them
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('runs', 'id'), max(id)) FROM runs")
    return engine


def _value(v):
    return base64.b64decode(v["base64"]) if isinstance(v, dict) else v


def dump(engine) -> dict:
    """Every table's columns, indexes and rows (sorted), alembic_version apart."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        out = {}
        for name in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
            rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).mappings().all()
            out[name] = dict(
                columns=sorted(c["name"] for c in inspector.get_columns(name)),
                indexes=sorted(i["name"] for i in inspector.get_indexes(name)),
                rows=sorted((dict(r) for r in rows), key=repr))
        return out


def old_names(engine) -> list[str]:
    """Tables, columns, indexes, constraints and sequences still named after `runs` or `run_id`."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        tables = inspector.get_table_names()
        names = [*tables, *(inspector.get_sequence_names() if conn.dialect.name == "postgresql" else [])]
        for t in tables:
            names += [c["name"] for c in inspector.get_columns(t)]
            names += [i["name"] for i in inspector.get_indexes(t)]
            names += [fk["name"] for fk in inspector.get_foreign_keys(t)]
            names.append(inspector.get_pk_constraint(t)["name"])
    return sorted(n for n in names if n and "run" in n)


def schema_differences(engine) -> list:
    """What Alembic's autogenerate would change to make the database match harness.store.db's tables."""
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), db.metadata)
    return [d for d in diffs if not (d[0] == "remove_table" and d[1].name == "alembic_version")]


def versions(engine) -> tuple:
    with engine.connect() as conn:
        return migrations.schema_version(conn), migrations.revision(conn)


def made_before_alembic(url: str, version: int) -> sa.Engine:
    """A database at an old schema version, as the harness of that version left it: the revisions
    up to it, then no alembic_version table."""
    engine = db.make_engine(url)
    db.upgrade(engine, f"{version:04d}")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    return engine


# ---- upgrades ---------------------------------------------------------------------------------

def test_a_schema_4_database_upgrades_to_head_with_every_row_intact(url):
    engine = load_schema4(url)
    before = dump(engine)
    fixture = json.loads((SCHEMA4 / "rows.json").read_text())["tables"]
    assert {name: len(t["rows"]) for name, t in fixture.items()} == {n: len(t["rows"]) for n, t in before.items()}
    assert versions(engine) == (4, "0004")

    assert db.upgrade(engine) == ("0004", migrations.head())
    after = dump(engine)
    for name, table in before.items():
        if name == migrations.META_TABLE:
            continue  # its one row, schema_version, moves to head: checked below
        new = RENAMED_TABLES.get(name, name)
        kept = [{c: row[RENAMED_COLUMNS.get(c, c)] for c in table["columns"]} for row in after[new]["rows"]]
        assert kept == table["rows"], name
    assert versions(engine) == (int(migrations.head()), migrations.head())
    assert schema_differences(engine) == [] and old_names(engine) == []
    db.open_db(url)  # a worker accepts it

    assert db.upgrade(engine) == (migrations.head(), migrations.head())  # a second one: nothing
    assert dump(engine) == after


def test_an_upgraded_database_takes_new_work(url, tmp_path):
    """The queued job of the old database is claimed and finished by today's worker."""
    load_schema4(url).dispose()
    assert cli.invoke(app, ["db", "upgrade", "--db", url]).exit_code == 0
    r = cli.invoke(app, ["work", "--until-empty", "--quiet", "--runner", "runners:instant",
                         "--runs-dir", str(tmp_path / "runs"), "--db", url], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with db.make_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status")).all() == \
            [("done", 6), ("failed", 1)]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_older_versions_made_before_alembic_upgrade_to_head(url, version):
    engine = made_before_alembic(url, version)
    assert versions(engine) == (version, f"{version:04d}")
    with pytest.raises(HarnessError, match="harness db upgrade"):
        db.open_db(url)
    assert db.upgrade(engine) == (f"{version:04d}", migrations.head())
    assert versions(engine) == (int(migrations.head()), migrations.head())
    assert schema_differences(engine) == [] and old_names(engine) == []


def test_a_version_1_database_that_already_has_parts_of_version_2(url):
    """Version 2's tables and column were added while the schema was still numbered 1."""
    engine = made_before_alembic(url, 2)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE harness_meta SET value = '1' WHERE key = 'schema_version'"))
    assert db.upgrade(engine) == ("0001", migrations.head())
    assert schema_differences(engine) == []


def test_a_new_database_is_created_at_head_matching_the_tables(url):
    engine = db.open_db(url, create=True)
    assert versions(engine) == (int(migrations.head()), migrations.head())
    assert schema_differences(engine) == [] and old_names(engine) == []
    r = cli.invoke(app, ["db", "upgrade", "--db", url])
    assert r.exit_code == 0 and f"{migrations.head()} -> {migrations.head()} (up to date)" in r.stdout


def test_upgrades_at_the_same_time_create_the_schema_once(url):
    """Three `enqueue`s on a new database at once: the others wait for the first, then find it done."""
    assert upgrade_race(url) == "ok"


def test_upgrades_racing_on_new_sqlite_files_never_fail(tmp_path):
    """The same race, many times: it once failed one run in many ("database is locked")."""
    results = [upgrade_race(f"sqlite:///{tmp_path / f'results{i}.db'}") for i in range(8)]
    assert results == ["ok"] * 8


def upgrade_race(url: str):
    """Three threads upgrade the new database at `url` at once: "ok", or what they returned."""
    out = []

    def upgrade():
        try:
            out.append(db.upgrade(db.make_engine(url)))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            out.append(exc)

    threads = [threading.Thread(target=upgrade, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)  # unserialised upgrades can wait on each other for ever
    head = migrations.head()
    expected = sorted([(None, head), (head, head), (head, head)], key=str)
    return "ok" if sorted(out, key=str) == expected else out


def test_the_switch_to_wal_waits_while_another_upgrader_writes(tmp_path):
    """SQLite refuses the switch to WAL at once, without a busy wait, while another connection
    writes a file still in rollback mode: the moment two upgraders race on a new file (the other
    one creating the schema). The switch must wait for that writer, not fail."""
    path = tmp_path / "results.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE other_upgrader (x)")
    release = threading.Timer(0.5, writer.execute, ["COMMIT"])
    release.start()
    try:
        db._use_wal(db.make_engine(f"sqlite:///{path}"))
    finally:
        release.join()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


# ---- refusals ---------------------------------------------------------------------------------

def test_a_database_below_head_is_refused_by_every_command_until_upgraded(url, tmp_path):
    engine = db.make_engine(url)
    db.upgrade(engine, "0003")
    before = dump(engine)
    for args in (["work", "--until-empty"], ["enqueue", "--grid", "smoke"], ["status"],
                 ["report", "--table", "2"]):
        r = cli.invoke(app, [*args, "--db", url], catch_exceptions=False)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, (args, r.output)
        assert f"run `harness db upgrade --db {url}`" in lines[0] and "0003" in lines[0], lines
    assert dump(engine) == before and versions(engine) == (3, "0003")

    r = cli.invoke(app, ["db", "upgrade", "--db", url])
    assert r.exit_code == 0 and f"schema revision 0003 -> {migrations.head()}" in r.stdout
    r = cli.invoke(app, ["work", "--until-empty", "--quiet", "--runner", "runners:instant",
                         "--runs-dir", str(tmp_path / "runs"), "--db", url], catch_exceptions=False)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("newer", ["alembic", "before alembic"])
def test_a_database_from_a_newer_harness_is_refused(url, newer):
    engine = db.open_db(url, create=True)
    with engine.begin() as conn:
        if newer == "alembic":
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        else:
            conn.execute(sa.text("DROP TABLE alembic_version"))
            conn.execute(sa.text("UPDATE harness_meta SET value = '99' WHERE key = 'schema_version'"))
    before = dump(engine)
    for args in (["work", "--until-empty"], ["db", "upgrade"]):
        r = cli.invoke(app, [*args, "--db", url], catch_exceptions=False)
        assert r.exit_code == 2 and "newer than this harness" in r.stderr, r.output
        assert "upgrade the harness" in r.stderr
    assert dump(engine) == before
