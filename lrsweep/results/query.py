"""SQL over the store: DuckDB, with the tables `trials` and `epochs` (latest records only)."""

import duckdb

from lrsweep.errors import LrsweepError
from lrsweep.results.store import read_table

FORMATS = ("table", "csv", "json")


def query(root, sql):
    """The result of `sql` as a pandas DataFrame."""
    con = duckdb.connect()
    for table in ("trials", "epochs", "lr_range"):
        con.register(table, read_table(root, table))
    try:
        return con.execute(sql).df()
    except duckdb.Error as e:
        raise LrsweepError(f"Argument `sql` is not a query DuckDB can run: {str(e).splitlines()[0]}. "
                           f"Received: sql={sql!r}") from None


def format_frame(frame, fmt):
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso")
    return frame.to_string(index=False) if len(frame) else "(no rows)"
