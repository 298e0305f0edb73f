"""Many new rows of one model in one statement, for ingest's per-alert rows.

A notification of 50 new alerts inserts 50 alerts and 50 timeline lines. Through the ORM's
`bulk_create`, preparing and quoting those values cost more than PostgreSQL's insert itself: each
value passes through the field's preparation, and on PostgreSQL the rows travel as UNNEST
arrays whose JSON elements psycopg escapes character by character in Python (`python -m bench
profile`, case c: 99,000 regex substitutions for 30 requests). COPY FROM STDIN takes the rows as
they are, formatted by psycopg in C; a few rows go as a prepared INSERT instead (INSERT_MAX_ROWS).
Elsewhere (SQLite) `bulk_create` does the work.

What COPY cannot do, this does not offer: ids are not read back (use `bulk_create` for rows whose
id is needed, such as a line announced to Slack), and a field's `pre_save` is not called, so
models with `auto_now` fields are refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from functools import cache, partial
from typing import Any

import orjson
from django.db import connection, models


@cache
def _columns(model: type[models.Model]) -> tuple[tuple[models.Field, bool], ...]:
    """The fields COPY writes, each with whether it holds JSON; the auto id is left to the table."""
    fields = []
    for field in model._meta.concrete_fields:
        if isinstance(field, models.AutoField):
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            raise ValueError(f"{model.__name__}.{field.name} needs pre_save: use bulk_create")
        fields.append((field, isinstance(field, models.JSONField)))
    return tuple(fields)


def json_text(value: Any) -> str:
    """`value` as JSON text for a json/jsonb column or parameter.

    orjson writes it ten times faster than the json module (0.34 against 0.03 ms for the labels,
    annotations and timeline payload of 50 alerts), which is most of what a 50-alert
    notification spends on JSON. Where orjson refuses a value the json module takes (keys that
    are not strings, integers over 64 bits, lone surrogates), the json module writes it, as it
    did before; PostgreSQL then judges it as before. One difference is kept: NaN and infinities
    become null, where the json module wrote NaN, which PostgreSQL refuses.
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value)


def _row(values: Mapping[str, Any], columns: tuple[tuple[models.Field, bool], ...]) -> list:
    row = []
    for field, is_json in columns:
        value = values[field.attname]
        if is_json and value is not None:
            if field.encoder is None:
                value = json_text(value)
            else:
                value = json.dumps(value, cls=field.encoder)
        row.append(value)
    return row


# Up to this many rows go as one INSERT ... VALUES, which psycopg prepares once a connection has
# run it a few times (settings.DATABASES' prepare_threshold); more go by COPY. COPY takes two
# round trips and a set-up: for one row, 0.16-0.19 ms of Python and 0.10 ms of PostgreSQL's CPU
# against 0.09 and 0.06 for the INSERT; they cost the same at about ten rows (in-process, 1,000
# calls, three rounds). A new alert's notification inserts one alert and one timeline line.
INSERT_MAX_ROWS = 8


@cache
def _table_and_columns(model: type[models.Model]) -> str:
    """`table (column, ...)` as the statements below name them: the model's names, quoted."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(field.column) for field, _ in _columns(model))
    return f"{quote(model._meta.db_table)} ({names})"


@cache
def _insert_sql(model: type[models.Model], count: int) -> str:
    """INSERT of `count` rows; JSON columns cast, as their values are sent as text. Only the
    model's quoted names are in the text (S608): the values are all parameters."""
    one = "({})".format(
        ", ".join("%s::jsonb" if is_json else "%s" for _, is_json in _columns(model))
    )
    values = ", ".join([one] * count)
    return f"INSERT INTO {_table_and_columns(model)} VALUES {values}"  # noqa: S608


def insert_rows(model: type[models.Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` of `model` in one statement; each row maps every column's attname (the
    `_id` of a foreign key) to its value, defaults included. Their ids are not read back.

    Rows, not model instances: building 50 Alerts and 50 TimelineEvents only to read their
    attributes back cost a 50-alert notification about 2 ms of its 6-7 ms of Python (measured
    in-process, three rounds each way). A missing column is a KeyError, not a silent default.
    """
    if not rows:
        return
    columns = _columns(model)
    if connection.vendor != "postgresql":
        names = {field.attname for field, _ in columns}
        for row in rows:  # as COPY's rows below would (a KeyError), not the model's defaults
            if missing := names - row.keys():
                raise KeyError(f"{model.__name__} row without {sorted(missing)}")
        model.objects.bulk_create([model(**row) for row in rows])
        return
    if len(rows) <= INSERT_MAX_ROWS:
        params = [value for row in rows for value in _row(row, columns)]
        with connection.cursor() as cursor:
            cursor.execute(_insert_sql(model, len(rows)), params)
        return
    sql = f"COPY {_table_and_columns(model)} FROM STDIN"
    values = [_row(row, columns) for row in rows]
    with connection.cursor() as cursor:
        _run_with_wrappers(partial(_copy, cursor), sql, values, cursor)


def _copy(cursor, sql: str, rows: list[list], many: bool, context: dict) -> None:
    with connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


def _run_with_wrappers(copy, sql: str, rows: list[list], cursor) -> None:
    """Run the COPY as Django runs a statement: through `connection.execute_wrapper`s, and in
    the query log when queries are logged (debug, assertNumQueries), so it counts like any."""
    executor = copy
    for wrapper in reversed(connection.execute_wrappers):
        executor = partial(wrapper, executor)
    started = time.monotonic()
    try:
        executor(sql, rows, False, {"connection": connection, "cursor": cursor})
    finally:
        if connection.queries_logged:
            connection.queries_log.append(
                {
                    "sql": f"{sql} -- {len(rows)} rows",
                    "time": f"{time.monotonic() - started:.3f}",
                }
            )
