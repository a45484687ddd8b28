"""The results store: Parquet datasets, hive-partitioned by dataset and sweep.

    results/trials/dataset=D/sweep=S/part-*.parquet   one row per trial
    results/epochs/dataset=D/sweep=S/part-*.parquet   one row per trial and epoch
    results/lr_range/dataset=D/sweep=S/part-*.parquet the learning-rate range test

Every file of a table is written with the one explicit schema below, so a reader over the
whole folder (`pandas.read_parquet("results/epochs")`, `pyarrow.dataset`, DuckDB) never
meets a column that is missing or typed `null` in one file. Writes are atomic (a hidden
temporary file, then a rename; one upload on `s3://`/`gs://`), files are never rewritten,
and a sweep writes only under its own `sweep=` folder. Readers keep the latest record of a
trial (and of a trial's epoch), so a trial stored twice around a resume counts once, and
they skip a corrupt or foreign file with one warning naming it.

This module never imports Ray: rank, query and their tests run on Parquet files alone.
"""

import os
import time
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lrsweep.errors import LrsweepError, StoreUnreachable, say_held, warn
from lrsweep.results import LOGS
from lrsweep.schedules.registry import FAMILIES

TABLES = ("trials", "epochs", "lr_range")
PARTITIONING = ds.partitioning(pa.schema([("dataset", pa.string()), ("sweep", pa.string())]), flavor="hive")


def _param_fields():
    fields = {}
    for family in FAMILIES.values():
        for p in family.params:
            fields.setdefault(p.name, pa.string() if p.kind is str else pa.float64())
    return [pa.field(name, kind) for name, kind in fields.items()]


PARAM_COLUMNS = [f.name for f in _param_fields()]
TIMESTAMP = pa.timestamp("us", tz="UTC")

SCHEMAS = {
    "trials": pa.schema(
        [pa.field("trial_id", pa.string()), pa.field("family", pa.string()), pa.field("optimizer", pa.string()),
         *_param_fields(),
         pa.field("params", pa.string()), pa.field("seed", pa.int64()), pa.field("stage", pa.string()),
         pa.field("status", pa.string()), pa.field("error", pa.string()),
         pa.field("epochs", pa.int64()), pa.field("best_epoch", pa.int64()),
         *[pa.field(f"{which}_{log}", pa.float64()) for log in LOGS for which in ("best", "final")],
         pa.field("wall_seconds", pa.float64()), pa.field("node", pa.string()), pa.field("gpu_ids", pa.string()),
         pa.field("start_time", TIMESTAMP), pa.field("end_time", TIMESTAMP), pa.field("resumed_from", pa.int64()),
         pa.field("metric", pa.string()), pa.field("metric_mode", pa.string()),
         pa.field("max_epochs", pa.int64()), pa.field("budget", pa.int64()), pa.field("steps_per_epoch", pa.int64()),
         pa.field("batch_size", pa.int64()), pa.field("granularity", pa.string()),
         pa.field("model", pa.string()), pa.field("optimizer_args", pa.string()),
         pa.field("dataset_source", pa.string()), pa.field("training_settings", pa.string()),
         pa.field("written", TIMESTAMP)]),
    "epochs": pa.schema(
        [pa.field("trial_id", pa.string()), pa.field("epoch", pa.int64()), pa.field("lr", pa.float64()),
         *[pa.field(log, pa.float64()) for log in LOGS],
         pa.field("seconds", pa.float64()), pa.field("end_time", TIMESTAMP), pa.field("written", TIMESTAMP)]),
    "lr_range": pa.schema(
        [pa.field("optimizer", pa.string()), pa.field("step", pa.int64()), pa.field("lr", pa.float64()),
         pa.field("loss", pa.float64()), pa.field("smoothed_loss", pa.float64()),
         pa.field("written", TIMESTAMP)]),
}
# Columns added after stores were first written: a file without them is read with nulls.
LATER_COLUMNS = {"trials": {"gpu_ids", "budget", "training_settings", "resumed_from"}, "epochs": set(),
                 "lr_range": set()}
# The record a reader keeps is the latest `written` per key.
KEYS = {"trials": ("dataset", "sweep", "trial_id"), "epochs": ("dataset", "sweep", "trial_id", "epoch"),
        "lr_range": ("dataset", "sweep", "optimizer", "step")}


def is_uri(path):
    return "://" in path


def filesystem(root):
    """(pyarrow filesystem, path within it) for a folder or an `s3://`/`gs://` URI."""
    if is_uri(root):
        try:
            return pafs.FileSystem.from_uri(root)
        except (OSError, pa.ArrowException) as e:
            raise StoreUnreachable(f"Cannot open the store {root}: {(str(e) or repr(e)).splitlines()[0]}. "
                                   f"Received: {root!r}") from None
    return pafs.LocalFileSystem(), os.path.abspath(root)


def check_writable(root):
    """None if `root` is (or can be made) a writable folder; else a reason. Creates nothing."""
    if is_uri(root):
        return None
    path = os.path.abspath(root)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


# The longest name of a folder (bytes), as Linux' file systems and macOS' take it.
NAME_MAX = 255


def partition(root, table, dataset, sweep):
    return f"{root.rstrip('/')}/{table}/{segment('dataset', dataset)}/{segment('sweep', sweep)}"


def segment(key, value):
    """A partition's folder name, `key=value`, its value URI-encoded as the Hive readers
    (pyarrow's, DuckDB's) decode it: a dataset named by a file's stem (`csv:lr=0.1.csv`,
    `csv:q1%20sales.csv`) reads back as written, and its `=` does not break DuckDB's
    reading of the other partitions."""
    return f"{key}={urllib.parse.quote(value, safe='')}"


def segment_value(name, key):
    """The value of a partition folder named `name` (`segment`), or None where it is not one
    of `key`."""
    return urllib.parse.unquote(name[len(key) + 1:]) if name.startswith(f"{key}=") else None


def sweep_exists(root, sweep):
    """True if any table of the store holds a file of the sweep named `sweep` (a folder
    that a write killed before its rename left empty does not count)."""
    fs, base = filesystem(root)
    for table in TABLES:
        for dataset_dir in _listing(fs, f"{base}/{table}"):
            if dataset_dir.type != pafs.FileType.Directory:
                continue
            if any(f.type == pafs.FileType.File and not f.base_name.startswith(".")
                   for f in _listing(fs, f"{dataset_dir.path}/{segment('sweep', sweep)}")):
                return True
    return False


def has_table(root, table):
    """The store at `root` holds a folder for `table` (a launch has written into it)."""
    fs, base = filesystem(root)
    return fs.get_file_info(f"{base}/{table}").type != pafs.FileType.NotFound


def write_rows(root, table, dataset, sweep, rows):
    """Append `rows` (dicts; missing columns null) as one new file; returns its path or None."""
    if not rows:
        return None
    schema = SCHEMAS[table]
    now = pa.scalar(time.time_ns() // 1000, pa.int64()).cast(TIMESTAMP)
    data = pa.Table.from_pylist([{**row, "written": now.as_py()} for row in rows], schema=schema)
    fs, base = filesystem(root)
    folder = partition(base, table, dataset, sweep)
    name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    fs.create_dir(folder, recursive=True)
    if is_uri(root):  # one object upload is atomic
        with fs.open_output_stream(f"{folder}/{name}") as out:
            pq.write_table(data, out)
    else:
        temporary = f"{folder}/{_temporary_name(name)}"
        pq.write_table(data, temporary)
        os.replace(temporary, f"{folder}/{name}")
    return f"{folder}/{name}"


def _temporary_name(name):
    """Where `write_rows` writes a file before renaming it to `name`: hidden, and no .parquet."""
    return f".{name}.tmp"


def _is_temporary(base_name):
    """A file name of `_temporary_name` of one of `write_rows`' files."""
    return base_name.startswith(".part-") and base_name.endswith(".parquet.tmp")


def _list(fs, folder, recursive=False):
    """The entries of `folder` (all below it: `recursive`) in name order; a folder not there
    lists nothing; OSError where it cannot be listed."""
    return sorted(fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=recursive)),
                  key=lambda i: i.path)


def _listing(fs, folder):
    """`_list` of `folder`; LrsweepError if it cannot be listed (permissions, an object
    store's credentials)."""
    try:
        return _list(fs, folder)
    except OSError as e:
        raise LrsweepError(f"Cannot list the store's folder {folder}: {str(e).splitlines()[0]}") from None


def _entries(fs, root):
    """Every entry below a table's folder `root`, in name order, in one recursive listing
    (one request of an object store). Where that fails, folder by folder, down to the
    sweeps' folders: one that cannot be listed (`root` too: a file, or a folder without
    permissions) gets a warning and lists nothing."""
    try:
        return _list(fs, root, recursive=True)
    except OSError:
        pass
    entries, pending = [], [root]
    while pending:
        folder = pending.pop()
        try:
            found = _list(fs, folder)
        except OSError as e:
            warn(f"skipping {folder}: cannot be listed ({str(e).splitlines()[0]})")
            continue
        entries += found
        depth = folder.count("/") - root.count("/")
        # dataset=D, then sweep=S: what a foreign folder holds is never read (`table_files`)
        pending += [i.path for i in found if depth < 2 and _partition_folder(i, ("dataset", "sweep")[depth])]
    return sorted(entries, key=lambda i: i.path)


def _partition_folder(info, key):
    """Whether the listed entry `info` is a folder `key=value` (`segment`) with a value."""
    return (info.type == pafs.FileType.Directory and info.base_name.startswith(f"{key}=")
            and info.base_name != f"{key}=")


def _foreign(info, table):
    """A warning for something in a table's folders that is not the table's."""
    what = (f"not a folder of the {table} table (nothing in it is read)" if info.type == pafs.FileType.Directory
            else f"not a file of the {table} table")
    warn(f"skipping {info.path}: {what}")


def table_files(fs, base, table, dataset=None, sweep=None):
    """The readable files of a table, `<table>/dataset=D/sweep=S/*.parquet` (of `dataset`,
    of `sweep`, where given: the other files are neither read nor judged); every other file
    or folder in its folders gets one warning and is left alone (what a foreign folder holds
    is not read), but for our own temporary files (`write_rows`)."""
    root = f"{base}/{table}"
    found, foreign = [], []
    expected = SCHEMAS[table]
    for info in _entries(fs, root):
        relative = info.path[len(root) + 1:]
        if any(relative.startswith(f"{folder}/") for folder in foreign):
            continue
        parts = relative.split("/")
        if len(parts) < 3:  # dataset=D, then sweep=S: folders, each with a value
            if not _partition_folder(info, ("dataset", "sweep")[len(parts) - 1]):
                _foreign(info, table)
                foreign.append(relative)
            continue
        if _is_temporary(info.base_name) or (dataset is not None and segment_value(parts[0], "dataset") != dataset) or (
                sweep is not None and segment_value(parts[1], "sweep") != sweep):
            continue
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            _foreign(info, table)
            foreign.append(relative)
            continue
        try:
            schema = pq.read_schema(fs.open_input_file(info.path))
        except Exception as e:
            warn(f"skipping {info.path}: not a readable Parquet file ({str(e).splitlines()[0]})")
            continue
        wrong = [f.name for f in expected
                 if (schema.get_field_index(f.name) < 0 and f.name not in LATER_COLUMNS[table])
                 or (schema.get_field_index(f.name) >= 0 and schema.field(f.name).type != f.type)]
        if wrong:
            warn(f"skipping {info.path}: not an lrsweep {table} file (columns missing or mistyped: "
                 f"{', '.join(wrong[:5])})")
            continue
        found.append(info.path)
    return found


def read_table(root, table, dataset=None, sweep=None):
    """A table of the store as one pyarrow Table, with `dataset` and `sweep` columns, the
    latest record of each key only; `dataset` limits it to one dataset, `sweep` to one run."""
    fs, base = filesystem(root)
    schema = SCHEMAS[table].append(pa.field("dataset", pa.string())).append(pa.field("sweep", pa.string()))
    files = table_files(fs, base, table, dataset, sweep)
    try:
        data = ds.dataset(files, schema=schema, format="parquet", filesystem=fs, partitioning=PARTITIONING,
                          partition_base_dir=f"{base}/{table}").to_table()
    except (OSError, pa.ArrowException):
        data = _read_one_by_one(fs, base, table, files, schema)
    if table == "epochs":
        return current_attempts(data, read_table(root, "trials", dataset, sweep))
    return latest(data, KEYS[table])


def current_attempts(epochs, trials):
    """The epochs of each trial's stored attempt: those that ended between the stored
    trial's start and end, up to its last epoch (`epochs`). A trial run again from its first
    epoch (a retry, or a resume after a kill, without a checkpoint) leaves the earlier
    attempt's epochs behind, and its stored row names the attempt it describes, so a
    trial's epochs always agree with its row. One that went on from a checkpoint
    (`resumed_from`, the checkpoint's epoch) keeps its first start: the latest record of
    each of its epochs is kept (those after the checkpoint supersede the failed attempt's,
    and an attempt that ended sooner leaves the later ones behind). The epochs of a trial
    not stored yet (still running, or killed) keep the latest record of each epoch. Only
    the rows of those two kinds of trial are grouped by epoch. `query`'s `epochs` view is
    the same rule in SQL."""
    epochs = epochs.take(pc.sort_indices(epochs, sort_keys=[("written", "ascending")]))
    bounds = trials.select(["dataset", "sweep", "trial_id", "start_time", "end_time", "epochs", "resumed_from"]
                           ).rename_columns(["dataset", "sweep", "trial_id", "_start", "_end", "_epochs", "_resumed"])
    joined = epochs.append_column("_order", pa.array(range(epochs.num_rows), pa.int64())).join(
        bounds, ["dataset", "sweep", "trial_id"], join_type="left outer")
    stored = pc.is_valid(joined["_start"])
    within = pc.and_kleene(pc.and_kleene(
        pc.greater_equal(joined["end_time"], joined["_start"]),
        pc.or_kleene(pc.is_null(joined["_end"]), pc.less_equal(joined["end_time"], joined["_end"]))),
        pc.or_kleene(pc.is_null(joined["_epochs"]), pc.less_equal(joined["epoch"], joined["_epochs"])))
    joined = joined.filter(pc.or_(pc.fill_null(pc.and_kleene(stored, within), False), pc.invert(stored)))
    grouped = pc.or_(pc.invert(pc.is_valid(joined["_start"])), pc.is_valid(joined["_resumed"]))
    joined = pa.concat_tables([joined.filter(pc.invert(grouped)), latest(joined.filter(grouped), KEYS["epochs"])])
    return joined.take(pc.sort_indices(joined, sort_keys=[("_order", "ascending")])).select(epochs.schema.names)


def _read_one_by_one(fs, base, table, files, schema):
    """The slow path, when a file's footer reads but its data does not: find it, skip it."""
    parts = []
    for path in files:
        try:
            parts.append(ds.dataset([path], schema=schema, format="parquet", filesystem=fs,
                                    partitioning=PARTITIONING, partition_base_dir=f"{base}/{table}").to_table())
        except (OSError, pa.ArrowException) as e:
            warn(f"skipping {path}: not a readable Parquet file ({str(e).splitlines()[0]})")
    return pa.concat_tables(parts) if parts else schema.empty_table()


def latest(data, keys):
    """Rows of `data` keeping, for each key, the one written last."""
    data = data.take(pc.sort_indices(data, sort_keys=[("written", "ascending")]))
    rows = data.append_column("_row", pa.array(range(data.num_rows), pa.int64()))
    last = rows.group_by(list(keys), use_threads=False).aggregate([("_row", "last")])
    if last.num_rows == data.num_rows:
        return data
    return data.take(last["_row_last"].combine_chunks().sort())


def read_frame(root, table, dataset=None, sweep=None):
    """`read_table` as a pandas DataFrame."""
    return read_table(root, table, dataset, sweep).to_pandas()


def sweep_trials(root, sweep, dataset=None):
    """The `trials` of run `sweep` (on `dataset`) as a DataFrame; LrsweepError if the store
    holds none, naming the runs it does hold (by their folders)."""
    trials = read_frame(root, "trials", dataset, sweep)
    if trials.empty:
        fs, base = filesystem(root)
        folders = [f for f in _listing(fs, f"{base}/trials") if _partition_folder(f, "dataset")]
        if dataset is not None and dataset not in [segment_value(f.base_name, "dataset") for f in folders]:
            dataset_trials(root, dataset)  # the dataset is the typo: that error names the datasets held
        held = sorted({segment_value(info.base_name, "sweep") for folder in folders
                       if dataset in (None, segment_value(folder.base_name, "dataset"))
                       for info in _listing(fs, folder.path) if _partition_folder(info, "sweep")})
        holds = ("its files hold no readable trial" if sweep in held else
                 f"it holds {', '.join(held)}" if held else "it holds no trials")
        on = f" on dataset {dataset!r}" if dataset else ""
        if sweep in held:  # the warnings that name the run's unreadable files: the error's cause
            say_held(f"/{segment('sweep', sweep)}")
        raise LrsweepError(f"Argument `sweep` names no run{on} in the store {root}. Received: sweep={sweep!r} "
                           f"({holds})")
    return trials


def dataset_trials(root, dataset):
    """The `trials` of `dataset` as a DataFrame; LrsweepError if the store holds none, naming
    the datasets it does hold (by their folders: no file is read twice)."""
    trials = read_frame(root, "trials", dataset)
    if trials.empty:
        fs, base = filesystem(root)
        held = [segment_value(info.base_name, "dataset") for info in _listing(fs, f"{base}/trials")
                if _partition_folder(info, "dataset")]
        holds = ("its files hold no readable trial" if dataset in held else
                 f"the store holds {', '.join(held)}" if held else "the store holds no trials")
        if dataset in held:  # the warnings that name the dataset's unreadable files: the error's cause
            say_held(f"{base}/trials/{segment('dataset', dataset)}")
        raise LrsweepError(f"Argument `dataset` names no dataset in the store {root}. Received: dataset={dataset!r} "
                           f"({holds})")
    return trials


def data_file(dataset):
    """A csv:/npz: dataset by its file's name (and options), which names its partition in
    the store: the file may have moved since the launch."""
    prefix, colon, path = dataset.partition(":") if isinstance(dataset, str) else ("", "", "")
    if not colon or prefix not in ("csv", "npz"):
        return dataset
    body, question, options = path.partition("?")
    return f"{prefix}:{os.path.basename(body)}{question}{options}"
