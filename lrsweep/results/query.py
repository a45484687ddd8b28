"""SQL over the store: DuckDB, with the tables `trials`, `epochs` and `lr_range`, each the
latest record of its key (as every lrsweep reader sees them)."""

import datetime
import decimal
import json
import math
import uuid

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from lrsweep.errors import LrsweepError
from lrsweep.results import store

FORMATS = ("table", "csv", "json")
# A time in JSON: to the microsecond, as stored (pandas' JSON cut it to milliseconds); in UTC,
# marked Z, where it has a zone.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
# The words a reading query begins with (a PIVOT anywhere in one makes DuckDB's statement MULTI).
READING = ("SELECT", "FROM", "WITH", "PIVOT", "UNPIVOT", "VALUES", "DESCRIBE", "SHOW", "SUMMARIZE")


def connect(root, direct=True):
    """A DuckDB connection with a view per table. DuckDB reads the Parquet files itself
    (in parallel, only the columns a query needs); files the store reader would skip are
    left out, with its warning. `direct=False` hands DuckDB the tables as pyarrow reads
    them instead, which finds and skips a file whose data (not footer) is damaged (and
    reads the partitions from the table's folder down)."""
    con = duckdb.connect()
    fs, base = store.filesystem(root)
    # DuckDB takes every key=value folder of a file's path as a partition column: one above
    # the store (results under /data/dataset=mnist/) would give wrong `dataset` values there
    direct = direct and not any("=" in folder for folder in base.split("/"))
    for table, keys in store.KEYS.items():
        files = [] if store.is_uri(root) or not direct else store.table_files(fs, base, table)
        if files:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            # by name: a file from before a later column (store.LATER_COLUMNS) has nulls there,
            # wherever it comes in the list (DuckDB takes the first file's columns otherwise)
            rows = (f"SELECT * FROM read_parquet([{listed}], hive_partitioning = true, union_by_name = true, "
                    f"hive_types = {{'dataset': VARCHAR, 'sweep': VARCHAR}})")
            if store.LATER_COLUMNS[table]:  # a store written before them has none: typed nulls
                later = pa.schema([store.SCHEMAS[table].field(name) for name in sorted(store.LATER_COLUMNS[table])])
                typed = con.from_arrow(later.empty_table())  # their types as DuckDB names them
                nulls = ", ".join(f'CAST(NULL AS {kind}) AS "{name}"' for name, kind in zip(typed.columns, typed.types))
                rows = f"SELECT * FROM (({rows}) UNION ALL BY NAME (SELECT {nulls} WHERE false))"
            latest = f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY written DESC) = 1"
            if table == "epochs":  # each trial's stored attempt (store.current_attempts)
                extra = "_start, _end, _epochs, _resumed"
                view = (f"WITH j AS (SELECT e.*, t._start, t._end, t._epochs, t._resumed FROM ({rows}) e LEFT JOIN "
                        f"(SELECT dataset, sweep, trial_id, start_time AS _start, end_time AS _end, epochs AS _epochs, "
                        f"resumed_from AS _resumed FROM trials) t USING (dataset, sweep, trial_id)), "
                        f"k AS (SELECT * FROM j WHERE _start IS NULL OR (end_time >= _start AND (_end IS NULL OR "
                        f"end_time <= _end) AND (_epochs IS NULL OR epoch <= _epochs))) "
                        f"SELECT * EXCLUDE ({extra}) FROM k WHERE _start IS NOT NULL AND _resumed IS NULL "
                        f"UNION ALL (SELECT * EXCLUDE ({extra}) FROM k WHERE _start IS NULL OR _resumed IS NOT NULL "
                        f"{latest})")
            else:
                view = f"{rows} {latest}"
            con.execute(f"CREATE VIEW {table} AS {view}")
        else:  # an empty table, or a store behind a URI: through pyarrow's filesystems
            con.register(table, store.read_table(root, table))
    return con


EXPLAIN_OPTIONS = ("ANALYZE", "ANALYSE", "FORMAT")  # EXPLAIN (FORMAT json, ANALYZE) SELECT ...


def check_sql(sql, received=None):
    """`sql` is one statement that reads: a query never writes (DuckDB's COPY ... TO could
    overwrite a stored file), and says so before it runs. PIVOT counts as reading, and so
    does EXPLAIN [ANALYZE] [(options)] of a statement that reads (ANALYZE runs it). `received`: the SQL
    as given, of which `sql` is the part explained."""
    received = sql if received is None else received
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise LrsweepError(f"Argument `sql` is not a query DuckDB can run: {str(e).splitlines()[0]}. "
                           f"Received: sql={received!r}") from None
    # the words as DuckDB reads them (a comment may hold another), comments left out
    tokens = duckdb.tokenize(sql)
    words = [(start, sql[start:end].strip()) for (start, kind), end in
             zip(tokens, [start for start, _ in tokens[1:]] + [len(sql)]) if kind != duckdb.token_type.comment]
    if len(statements) == 1 and statements[0].type == duckdb.StatementType.EXPLAIN and words[0][1].upper() == "EXPLAIN":
        explained = words[2:] if len(words) > 1 and words[1][1].upper() in ("ANALYZE", "ANALYSE") else words[1:]
        if len(explained) > 1 and explained[0][1] == "(" and explained[1][1].upper() in EXPLAIN_OPTIONS:
            ends = [i for i, (_, word) in enumerate(explained) if word == ")"]  # the options hold no brackets
            explained = explained[ends[0] + 1:] if ends else []
        return check_sql(sql[explained[0][0]:] if explained else "", received)
    # DuckDB makes any statement holding a PIVOT a MULTI one (CREATE TYPE ..., then it): the
    # query itself must begin as a reading one, not COPY (PIVOT ...) TO
    first = next((word.upper() for _, word in words if word.strip("(")), "")
    multi = statements and statements[0].type == duckdb.StatementType.MULTI and first in READING
    if len(statements) != 1 or not (statements[0].type == duckdb.StatementType.SELECT or multi):
        found = ", ".join(s.type.name for s in statements) or "none"
        raise LrsweepError(f"Argument `sql` must be one query that reads (SELECT, FROM, WITH, DESCRIBE, SHOW, "
                           f"SUMMARIZE, PIVOT, or EXPLAIN of one; the store is never written here). "
                           f"Received: sql={received!r} "
                           f"(statements: {found})")


def query(root, sql):
    """The result of `sql` as a pandas DataFrame."""
    check_sql(sql)
    try:
        try:
            return connect(root).execute(sql).df()
        except duckdb.Error as e:
            # the query's own fault; but a folder written before names were encoded
            # (dataset=lr=0.1) is refused as a Binder error, and reads through pyarrow as a
            # damaged file does (pyarrow finds that, warns, and answers from the rest)
            own = isinstance(e, (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException))
            if own and "Hive partition" not in str(e):
                raise
            return connect(root, direct=False).execute(sql).df()
    except duckdb.Error as e:
        raise LrsweepError(f"Argument `sql` is not a query DuckDB can run: {str(e).splitlines()[0]}. "
                           f"Received: sql={sql!r}") from None


def format_frame(frame, fmt):
    if fmt == "table" and list(frame.columns) == ["explain_key", "explain_value"]:  # EXPLAIN: DuckDB's drawing
        return "\n".join(f"{key}:\n{value.rstrip()}" for key, value in frame.itertuples(index=False))
    frame = _as_text(frame)
    if fmt == "csv":
        return _nested_as_json(frame).to_csv(index=False).rstrip("\n")
    if fmt == "json":
        columns = [_json_column(frame.iloc[:, i]) for i in range(frame.shape[1])]  # by place: names may repeat
        names = [str(name) for name in frame.columns]
        return json.dumps([dict(zip(names, row)) for row in zip(*columns)], separators=(",", ":"), allow_nan=False)
    return frame.to_string(index=False) if len(frame) else "(no rows)"


def _json_column(column):
    """A column's values as JSON takes them: every float as it is (pandas' JSON kept ten
    decimals: a rate of 1e-12 was 0.0, a parameter lost its last digits), a timestamp to
    the microsecond as stored (in UTC, marked Z, where it has a zone), a number that is
    not finite and a NULL as null."""
    if column.dtype.kind == "f" and isinstance(column.dtype, np.dtype):
        values = column.to_numpy(dtype="float64")
        plain = values.tolist()
        for i in np.flatnonzero(~np.isfinite(values)):
            plain[i] = None
        return plain
    if column.dtype.kind == "M":
        if getattr(column.dtype, "tz", None) is not None:
            text = column.dt.tz_convert("UTC").dt.strftime(TIME_FORMAT + "Z")
        else:
            text = column.dt.strftime(TIME_FORMAT)
        return text.astype(object).where(column.notna(), None).tolist()
    return [_json_value(value) for value in column]


def _json_value(value):
    """One value of a query's result as JSON takes it (`_json_column`); a LIST, STRUCT or
    MAP item by item."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (str, bool, np.bool_)):
        return value if isinstance(value, str) else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating, decimal.Decimal)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (datetime.datetime, np.datetime64)):
        value = pd.Timestamp(value)
        if value is pd.NaT:
            return None
        if value.tzinfo is not None:
            return value.tz_convert("UTC").strftime(TIME_FORMAT + "Z")
        return value.strftime(TIME_FORMAT)
    if isinstance(value, (datetime.timedelta, np.timedelta64)):
        value = pd.Timedelta(value)
        return None if value is pd.NaT else value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if value is None or pd.isna(value):
        return None
    return str(value)


def _nested_as_json(frame):
    """`frame` with each LIST, STRUCT and MAP value as JSON text, every item whole (pandas
    wrote a LIST as numpy prints an array: eight digits, and `...` in place of all but six
    items of a long one)."""
    nested = [i for i, kind in enumerate(frame.dtypes) if kind == object]
    if not nested:
        return frame
    frame = frame.copy()
    for i in nested:
        frame.iloc[:, i] = frame.iloc[:, i].map(
            lambda value: json.dumps(_json_value(value), allow_nan=False, ensure_ascii=False)
            if isinstance(value, (list, tuple, np.ndarray, dict)) else value)
    return frame


def _as_text(frame):
    """`frame` with the values of a query's own types that have no form of their own in a table,
    CSV or JSON as text, as DuckDB writes them: a BLOB (`bytearray(b'...')` in a table, `{}` in
    JSON), a UUID (JSON failed on it)."""
    def text(value):
        if isinstance(value, (bytes, bytearray, memoryview)):  # DuckDB's BLOB to VARCHAR, which reads back
            return "".join(chr(b) if 32 <= b < 127 and b not in b"\\'\"" else f"\\x{b:02X}" for b in bytes(value))
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, np.ndarray):  # a LIST
            if value.dtype.kind != "O" and not np.ma.isMaskedArray(value):
                return value  # of numbers or times, no NULL: as pandas writes it
            if value.dtype.kind in "mM":  # tolist() gives a nanosecond time as an int
                value = value.astype(value.dtype.str[:3] + "[us]")
            return [text(item) for item in value.tolist()]  # masked where NULL: None there (JSON wrote 0.0)
        if isinstance(value, (list, tuple)):
            items = [text(item) for item in value]
            return items if any(a is not b for a, b in zip(items, value)) else value
        if isinstance(value, dict):  # a STRUCT or MAP of them
            items = {key: text(item) for key, item in value.items()}
            return items if any(items[key] is not value[key] for key in value) else value
        return value

    objects = [i for i, kind in enumerate(frame.dtypes) if kind == object]  # by place: names may repeat
    if not objects:
        return frame
    frame = frame.copy()
    for i in objects:
        frame.iloc[:, i] = frame.iloc[:, i].map(text)
    return frame
