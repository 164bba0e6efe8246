"""Schema text for prompts."""

from __future__ import annotations

from pathlib import Path

from finestep.sql.schema import read_schema, schema_prompt


def test_schema_prompt_has_tables_keys_and_samples(db: Path) -> None:
    text = schema_prompt(db, sample_values=2)
    assert "CREATE TABLE team (\n  id INTEGER PRIMARY KEY, -- e.g. 1, 2\n  name TEXT, -- e.g. 'Lions', 'Tigers'" in text
    assert "  FOREIGN KEY (team_id) REFERENCES team(id)\n);" in text
    assert "CREATE TABLE numbers (\n  n INTEGER -- e.g. 0, 1\n);" in text


def test_schema_without_values(db: Path) -> None:
    text = schema_prompt(db, sample_values=0)
    assert "Lions" not in text and "e.g." not in text
    assert "CREATE TABLE player (\n  id INTEGER PRIMARY KEY,\n  name TEXT,\n  team_id INTEGER,\n  goals INT," in text


def test_schema_is_capped(db: Path) -> None:
    full = schema_prompt(db, sample_values=3)
    assert len(schema_prompt(db, sample_values=3, max_chars=len(full) - 1)) < len(full)
    capped = schema_prompt(db, sample_values=3, max_chars=200)
    assert len(capped) <= 200 and "more tables not shown" in capped
    assert capped.startswith("CREATE TABLE team")


def test_read_schema_records(db: Path) -> None:
    tables = {t.name: t for t in read_schema(db, sample_values=1)}
    assert set(tables) == {"team", "player", "numbers"}
    assert tables["player"].foreign_keys == (("team_id", "team", "id"),)
    assert [c.primary_key for c in tables["team"].columns] == [True, False, False]


def test_schema_of_every_spider_database(spider: Path) -> None:
    for path in sorted((spider / "database").glob("*/*.sqlite")):
        text = schema_prompt(path, max_chars=8000)
        assert text.startswith("CREATE TABLE") and len(text) <= 8000, path


def test_compact_schema_is_one_line_per_table_with_names_after_a_space(db: Path) -> None:
    # "TABLE team(" puts the name after a space, as in "FROM team": a BPE tokenizer reads both the same.
    assert schema_prompt(db, style="compact") == (
        "TABLE team(id, name, city)\nTABLE player(id, name, team_id -> team.id, goals)\nTABLE numbers(n)"
    )
