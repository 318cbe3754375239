"""Move a catalog between databases: export to JSON lines, import them, migrate.

The format is generic over the schema: every table of ``schema.Base.metadata`` in
dependency order, every column of each, so a column a new revision adds is carried
without a change here. An export is tied to the Alembic revision it was made at; an
import accepts only this tspipe's head revision (upgrade the source first).

Lines::

    {"format": "tspipe-catalog", "version": 1, "revision": R, "tables": [...]}
    {"row": {...}, "sha256": sha256(canonical JSON of row), "table": T}   (one per row)
    {"rows": {T: count}, "sha256": sha256 of every row line, each ending in a newline}

Rows come table by table, each ordered by primary key (Python's order of the values, not
the database's collation: SQLite and PostgreSQL then write the same bytes). Datetimes
are ISO-8601 in UTC (SQLite hands back naive UTC, PostgreSQL aware), so a catalog moved
SQLite -> PostgreSQL -> SQLite exports byte-identical lines.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from graphlib import TopologicalSorter
from typing import Any, TextIO

from sqlalchemy import Connection, DateTime, Engine, Table, UniqueConstraint, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError

from tspipe.catalog.engine import READ_ONLY, driver_problem, hidden_url, make_engine
from tspipe.catalog.migrate import current_revision, head_revision, require_head, upgrade
from tspipe.catalog.schema import Base
from tspipe.errors import CatalogError
from tspipe.io import canonical_json

logger = logging.getLogger(__name__)

FORMAT = "tspipe-catalog"
VERSION = 1
# Rows per INSERT statement; all of them share the import's one transaction.
_CHUNK_ROWS = 500

Row = dict[str, Any]
Key = tuple[Any, ...]


@dataclass(frozen=True)
class TableCount:
    """What an import did with one table's rows."""

    inserted: int = 0
    present: int = 0  # already in the target, with the same values


@dataclass(frozen=True)
class ImportResult:
    revision: str
    tables: dict[str, TableCount] = field(default_factory=dict)

    @property
    def inserted(self) -> int:
        return sum(count.inserted for count in self.tables.values())


@dataclass(frozen=True)
class MigrateResult:
    imported: ImportResult
    rows: int  # rows of the source, each found in the target with the same checksum
    extra: int  # rows the target held besides them


def _tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)


def _row_sha(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(row).encode("utf-8")).hexdigest()


def _key(table: Table, row: Mapping[str, Any]) -> Key:
    return tuple(row[column.name] for column in table.primary_key.columns)


def _shown(table: Table, key: Key) -> str:
    names = [column.name for column in table.primary_key.columns]
    return ", ".join(f"{name}={value!r}" for name, value in zip(names, key, strict=True))


def _to_json(value: Any) -> Any:
    """A column value as the export writes it; floats stay floats (JSON writes repr)."""
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        return aware.astimezone(UTC).isoformat()
    return value


def _from_json(table: Table, row: Mapping[str, Any]) -> Row:
    """An exported row as values to insert: datetimes parsed back (aware, UTC)."""
    out: Row = {}
    for column in table.columns:
        value = row[column.name]
        if value is not None and isinstance(column.type, DateTime):
            value = datetime.fromisoformat(value).astimezone(UTC)
        out[column.name] = value
    return out


def _rows(connection: Connection, table: Table) -> list[Row]:
    """Every row of ``table`` as export values, ordered by primary key."""
    names = [column.name for column in table.columns]
    rows = [{name: _to_json(value) for name, value in zip(names, found, strict=True)}
            for found in connection.execute(select(*table.columns))]
    return sorted(rows, key=lambda row: _key(table, row))


def _snapshot(engine: Engine) -> Connection:
    """A read-only connection whose reads all see one state of the database."""
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    return engine.execution_options(**options).connect()


def export_lines(url: str | URL) -> Iterator[str]:
    """The export of the catalog at ``url``, line by line (each without its newline)."""
    engine = make_engine(url)
    try:
        require_head(engine)
        tables = _tables()
        yield canonical_json({"format": FORMAT, "version": VERSION,
                              "revision": head_revision(),
                              "tables": [table.name for table in tables]})
        digest, counts = hashlib.sha256(), {}
        with _snapshot(engine) as connection, connection.begin():
            for table in tables:
                rows = _rows(connection, table)
                counts[table.name] = len(rows)
                for row in rows:
                    line = canonical_json({"table": table.name, "row": row,
                                           "sha256": _row_sha(row)})
                    digest.update((line + "\n").encode("utf-8"))
                    yield line
        yield canonical_json({"rows": counts, "sha256": digest.hexdigest()})
    except DBAPIError as exc:
        raise CatalogError(f"cannot export catalog {hidden_url(engine.url)}: "
                           f"{driver_problem(engine.url, exc)}") from exc
    finally:
        engine.dispose()


def export(url: str | URL, out: TextIO) -> dict[str, int]:
    """Write the export of the catalog at ``url`` to ``out``; return rows per table."""
    line = ""
    for line in export_lines(url):
        out.write(line + "\n")
    return dict(json.loads(line)["rows"])


# -- import -----------------------------------------------------------------------------


@dataclass
class _Parsed:
    revision: str
    rows: dict[str, list[Row]]


def _parse(lines: Iterable[str], source: str) -> _Parsed:
    """Check an export line by line; the first problem raises, naming its line."""
    tables = {table.name: table for table in _tables()}
    rows: dict[str, list[Row]] = {name: [] for name in tables}
    digest, trailer, number, revision = hashlib.sha256(), None, 0, ""

    def refuse(why: str) -> CatalogError:
        return CatalogError(f"{source}: line {number}: {why}: refused, nothing imported")

    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if trailer is not None:
            raise refuse("text after the trailer line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise refuse(f"not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise refuse("not a JSON object")
        if number == 1:
            revision = _check_header(obj, refuse)
        elif "table" in obj:
            table = tables.get(obj["table"])
            if table is None:
                raise refuse(f"unknown table {obj['table']!r}")
            row = obj.get("row")
            if not isinstance(row, dict) or obj.get("sha256") != _row_sha(row):
                raise refuse(f"row of {table.name} does not match its sha256 (edited?)")
            columns = {column.name for column in table.columns}
            if set(row) != columns:
                raise refuse(f"row of {table.name} has columns {sorted(row)}, the schema "
                             f"{sorted(columns)}")
            rows[table.name].append(row)
            digest.update((line + "\n").encode("utf-8"))
        elif "rows" in obj:
            trailer = obj
            counts = {name: len(found) for name, found in rows.items()}
            if obj["rows"] != counts or obj.get("sha256") != digest.hexdigest():
                raise refuse(f"the trailer's counts or sha256 do not match the rows before "
                             f"it (read {counts}): lines edited, added or removed")
        else:
            raise refuse("neither a row nor the trailer")
    if number == 0:
        raise CatalogError(f"{source}: empty: not a tspipe catalog export")
    if trailer is None:
        raise CatalogError(f"{source}: no trailer line after line {number}: the export is "
                           "truncated: refused, nothing imported")
    return _Parsed(revision, rows)


def _check_header(obj: Mapping[str, Any], refuse: Callable[[str], CatalogError]) -> str:
    if obj.get("format") != FORMAT or obj.get("version") != VERSION:
        raise refuse(f"not a {FORMAT} export of version {VERSION} (header "
                     f"format={obj.get('format')!r}, version={obj.get('version')!r})")
    revision, head = obj.get("revision"), head_revision()
    if revision != head:
        raise refuse(f"export of revision {revision}; this tspipe is at {head}: export it "
                     "with a tspipe of this revision (after `tspipe catalog upgrade` on "
                     "the source), or import it with the tspipe that made it")
    expected = sorted(table.name for table in _tables())
    if sorted(obj.get("tables") or []) != expected:
        raise refuse(f"header tables {obj.get('tables')} are not this schema's {expected}")
    return str(revision)


def _parents_first(table: Table, rows: Sequence[Row]) -> list[Row]:
    """``rows`` with each row after the rows of the same table it refers to (a
    checkpoint's parent): foreign keys are checked as each INSERT runs."""
    pk = [column.name for column in table.primary_key.columns]
    links = [[column.name for column in fk.columns] for fk in table.foreign_key_constraints
             if fk.referred_table is table and [e.column.name for e in fk.elements] == pk]
    if not links:
        return list(rows)
    by_key = {_key(table, row): row for row in rows}
    graph = TopologicalSorter({key: [parent for names in links
                                     if (parent := tuple(row[n] for n in names)) in by_key
                                     and parent != key]
                               for key, row in by_key.items()})
    return [by_key[key] for key in graph.static_order()]


def _conflicts(table: Table, rows: Sequence[Row], there: Mapping[Key, Row]) -> list[Row]:
    """The rows not yet in the target; a row whose key is there with other values, or
    that another row holds a unique key of, refuses the import."""
    uniques = [[column.name for column in constraint.columns]
               for constraint in table.constraints
               if isinstance(constraint, UniqueConstraint)]
    taken = {(tuple(names), tuple(row[n] for n in names)): key
             for key, row in there.items() for names in uniques}
    new: list[Row] = []
    for row in rows:
        key = _key(table, row)
        if key in there:
            if there[key] != row:
                differ = sorted(n for n in row if there[key].get(n) != row[n])
                raise CatalogError(f"conflict in {table.name} at {_shown(table, key)}: the "
                                   f"target holds other values ({', '.join(differ)}): "
                                   "refused, nothing imported")
            continue
        for names in uniques:
            holder = taken.get((tuple(names), tuple(row[n] for n in names)))
            if holder is not None:
                raise CatalogError(
                    f"conflict in {table.name} at {_shown(table, key)}: its "
                    f"({', '.join(names)}) is held by the target's row at "
                    f"{_shown(table, holder)}: refused, nothing imported")
        new.append(row)
    return new


def _reset_sequences(connection: Connection, tables: Sequence[Table]) -> None:
    """PostgreSQL: move each serial key's sequence past the ids just inserted."""
    for table in tables:
        column = table.autoincrement_column
        if column is None:
            continue
        connection.execute(text(
            f'SELECT setval(pg_get_serial_sequence(:table, :column), '  # noqa: S608
            f'COALESCE(MAX("{column.name}"), 1), MAX("{column.name}") IS NOT NULL) '
            f'FROM "{table.name}"'), {"table": table.name, "column": column.name})


def _write(connection: Connection, parsed: _Parsed) -> dict[str, TableCount]:
    dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
    counts: dict[str, TableCount] = {}
    for table in _tables():
        incoming = parsed.rows[table.name]
        if not incoming:
            counts[table.name] = TableCount()
            continue
        there = {_key(table, row): row for row in _rows(connection, table)}
        new = _parents_first(table, _conflicts(table, incoming, there))
        pk = [column.name for column in table.primary_key.columns]
        stmt = (dialect.insert(table).on_conflict_do_nothing(index_elements=pk)
                .returning(*table.primary_key.columns))
        inserted = 0
        for start in range(0, len(new), _CHUNK_ROWS):
            chunk = [_from_json(table, row) for row in new[start:start + _CHUNK_ROWS]]
            inserted += len(connection.execute(stmt, chunk).all())
        if inserted != len(new):  # another writer added some of these keys meanwhile
            raise CatalogError(f"conflict in {table.name}: {len(new) - inserted} rows were "
                               "written by another process during the import: rerun it")
        counts[table.name] = TableCount(inserted=inserted, present=len(incoming) - len(new))
    if connection.dialect.name == "postgresql":
        _reset_sequences(connection, _tables())
    return counts


def import_(url: str | URL, lines: Iterable[str], *, source: str = "export") -> ImportResult:
    """Import an export into the catalog at ``url`` in one transaction.

    Every line is checked first (header, each row's sha256, the trailer); a new SQLite
    file or empty database gets the schema. Rows already there with the same values are
    skipped; one whose key is there with other values refuses the whole import.
    """
    parsed = _parse(lines, source)
    where = hidden_url(url)
    if current_revision(url) is None:
        upgrade(url)
    engine = make_engine(url)
    try:
        require_head(engine)
        with engine.connect() as connection, connection.begin():
            counts = _write(connection, parsed)
    except IntegrityError as exc:
        raise CatalogError(f"import into {where}: {' '.join(str(exc.orig).split())}: "
                           "refused, nothing imported") from exc
    except DBAPIError as exc:
        raise CatalogError(f"cannot import into catalog {where}: "
                           f"{driver_problem(engine.url, exc)}") from exc
    finally:
        engine.dispose()
    logger.info("catalog %s: imported %d rows (%d already there)", where,
                sum(c.inserted for c in counts.values()), sum(c.present for c in counts.values()))
    return ImportResult(parsed.revision, counts)


def _checksums(lines: Iterable[str]) -> set[tuple[str, str]]:
    found = set()
    for line in lines:
        obj = json.loads(line)
        if "table" in obj:
            found.add((obj["table"], obj["sha256"]))
    return found


def migrate_to(src_url: str | URL, dst_url: str | URL) -> MigrateResult:
    """Copy the catalog at ``src_url`` into ``dst_url`` (export, import), then check that
    every source row is in the target with the same checksum."""
    buffer = io.StringIO()
    export(src_url, buffer)
    text_ = buffer.getvalue()
    imported = import_(dst_url, text_.splitlines(), source=f"export of {hidden_url(src_url)}")
    source, target = _checksums(text_.splitlines()), _checksums(export_lines(dst_url))
    missing = source - target
    if missing:
        tables = sorted({table for table, _ in missing})
        raise CatalogError(f"migrate to {hidden_url(dst_url)}: {len(missing)} rows of "
                           f"{', '.join(tables)} read back differently from the source")
    return MigrateResult(imported=imported, rows=len(source), extra=len(target - source))
