"""Shared fixtures: small hand-made databases and the shared Spider data."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest


def spider_dir() -> Path:
    return Path(os.environ.get("FINESTEP_SPIDER_DIR", Path(__file__).resolve().parents[1] / "../shared/data/spider"))


@pytest.fixture(scope="session")
def spider() -> Path:
    """The shared Spider folder; skipped when absent, except under CI=true, where absence fails."""
    path = spider_dir()
    if not (path / "dev.json").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Spider data not found at {path} (set FINESTEP_SPIDER_DIR); required under CI=true")
        pytest.skip(f"Spider data not found at {path}")
    return path


def make_db(path: Path) -> Path:
    """A small database: two tables, a foreign key, a non-UTF-8 text value and a 200-row table."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE team (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
        CREATE TABLE player (id INTEGER PRIMARY KEY, name TEXT, team_id INTEGER REFERENCES team(id), goals INT);
        CREATE TABLE numbers (n INTEGER);
        CREATE INDEX player_goals ON player(goals);
        INSERT INTO team VALUES (1, 'Lions', 'Oslo'), (2, 'Tigers', 'Rome'), (3, 'Bears', NULL);
        INSERT INTO player VALUES (1, 'Ann', 1, 10), (2, 'Bob', 1, 3), (3, 'Cid', 2, 7), (4, 'Dee', 3, 7);
        """
    )
    conn.executemany("INSERT INTO numbers VALUES (?)", [(i,) for i in range(200)])
    # Text stored with bytes that are not valid UTF-8, as in some real benchmark databases.
    conn.execute("INSERT INTO team VALUES (4, CAST(X'4361666594' AS TEXT), 'Paris')")
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "league.sqlite")


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for the session (initdb in a temporary folder, Unix socket, free port).

    Skipped when PostgreSQL is not installed, except under CI=true, where that fails (.ci/run installs it)."""
    from finestep.sql.engines.pg_server import PostgresServer, find_pg_bin

    if find_pg_bin() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("PostgreSQL server binaries (pg_ctl, initdb) not found; required under CI=true")
        pytest.skip("PostgreSQL server binaries not found")
    server = PostgresServer().start()
    yield server
    server.stop()
