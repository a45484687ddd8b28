"""What a run keeps in its Tune folder (`<storage>/<run name>`) beside Tune's own state: the
settings it was launched with, so that `--resume` goes on with them, and a lock, so that
one launch at a time runs it. Plain Python: `validate --resume` reads the settings without
Ray or TensorFlow."""

import contextlib
import json
import os
import socket

import pyarrow as pa

from lrsweep.errors import LrsweepError, warn
from lrsweep.results import store

SETTINGS_FILE = "lrsweep-launch.json"
LOCK_FILE = ".lrsweep-lock"

# What makes a run the run it is: its trials, its search, its early stopping, its
# confirmation runs. Tune's saved state holds the search and the scheduler as they were
# launched, so a resume on other settings would mix the two; each trial keeps its retries
# (`max_failures`) in it too. (Where the data's local copy sits and the checkpoint interval
# may change.)
RUN_FIELDS = ("families", "configs", "dataset", "subsample", "validation_split", "scale", "model", "model_args",
              "optimizer", "optimizer_args", "batch_size", "max_epochs", "granularity", "num_samples", "seed",
              "early_stopping", "grace_period", "reduction_factor", "metric", "mode", "resources", "confirm_seeds",
              "max_failures")
# The settings a launch flag sets (--dataset, --num-samples, --max-epochs, --confirm-seeds,
# --seed): a resume without the flag takes the run's.
FLAG_FIELDS = ("dataset", "num_samples", "max_epochs", "confirm_seeds", "seed")


def _plain(value):
    """`value` as JSON data, what is not JSON (a Range, a Choice) by its repr."""
    return json.loads(json.dumps(value, default=repr, sort_keys=True))


def run_settings(sweep):
    """The RUN_FIELDS of `sweep` as JSON data, a dataset file's path made absolute; no
    num_samples for fixed configs (which run as given)."""
    settings = {name: getattr(sweep, name) for name in RUN_FIELDS}
    return _plain({**settings, "dataset": sweep.training_settings()["dataset"],
                   "num_samples": sweep.num_samples if sweep.configs is None else None})


def _results_folder(sweep):
    """The sweep's results folder as the settings keep it: absolute (as the store takes it),
    unless a URI."""
    return sweep.results if store.is_uri(sweep.results) else os.path.abspath(sweep.results)


def save_settings(folder, sweep, data=None):
    """Keep `sweep`'s run settings in the run's Tune folder (made if need be), the results
    folder its trials are stored in (a resume's, from then on), and the fingerprint of its
    `data` (a `Dataset`), which a resume checks (`check_data`)."""
    fs, base = store.filesystem(folder)
    fs.create_dir(base, recursive=True)
    settings = {**run_settings(sweep), "results": _results_folder(sweep),
                **({"data": data.fingerprint} if data is not None else {})}
    with fs.open_output_stream(f"{base}/{SETTINGS_FILE}") as out:
        out.write(json.dumps(settings, sort_keys=True, indent=1).encode())


def _read_settings(folder):
    """(path, the settings the run in `folder` was launched with: a dict; None for a run
    launched before lrsweep kept them; else why they cannot be read)."""
    fs, base = store.filesystem(folder)
    path = f"{base}/{SETTINGS_FILE}"
    try:
        with fs.open_input_stream(path) as stream:
            return path, json.loads(stream.read())
    except FileNotFoundError:
        return path, None
    except (OSError, ValueError) as e:
        return path, e


def _saved_settings(folder):
    """The settings the run in `folder` was launched with; None for a run launched before
    lrsweep kept them, or (with a warning) one whose file cannot be read: a resume then
    takes the sweep as given (and keeps its settings, `save_settings`)."""
    path, saved = _read_settings(folder)
    if saved is not None and not isinstance(saved, dict):
        warn(f"cannot read {path} ({saved}): the run's settings are not checked, and the sweep goes on "
             f"with the sweep file's and the flags', which the launch keeps as the run's from then on")
        return None
    return saved


def check_data(folder, name, sweep, data):
    """A `--resume` of run `name` (Tune folder `folder`) trains on the data it was launched
    with (`Dataset.fingerprint`): its checkpoints are of models of those inputs and classes,
    and its search's results and ranking of those rows. Bad input where the data read now is
    other (a file edited or replaced since, a loader that reads it otherwise); nothing where
    the run kept no fingerprint (launched before lrsweep kept one) or its settings cannot
    be read (`resumed_sweep` warned)."""
    _, saved = _read_settings(folder)
    launched = saved.get("data") if isinstance(saved, dict) else None
    now = data.fingerprint
    if not isinstance(launched, dict) or launched == now:
        return
    raise LrsweepError(f"Argument `dataset` must hold the data run {name!r} was launched with, "
                       f"{_data_text(launched)}, to resume it (its checkpoints, its search's results and its ranking "
                       f"are of that data: launch a new run on this one under another name). Received: "
                       f"dataset={sweep.dataset!r}, {_data_text(now)}")


def _data_text(fingerprint):
    """A data fingerprint in words: "280 training and 71 validation rows of 34 features, 2
    classes (b, g), digest 1a2b..."."""
    from lrsweep.data.prepare import inputs_text

    classes = [str(c) for c in fingerprint.get("classes") or []]
    named = f" ({', '.join(classes)})" if len(classes) <= 10 else ""
    return (f"{fingerprint.get('training_rows')} training and {fingerprint.get('validation_rows')} validation rows "
            f"of {inputs_text(fingerprint.get('inputs') or [0])}, {len(classes)} classes{named}, digest "
            f"{fingerprint.get('digest')}")


def _difference(saved, current, where=""):
    """(where, saved, current) of the first place `saved` and `current` differ, down into
    mappings and lists (a family's parameter, a config's value), or None."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found = _difference(saved.get(key), current.get(key), f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for k, (a, b) in enumerate(zip(saved, current)):
            found = _difference(a, b, f"{where}[{k}]")
            if found:
                return found
        return None
    return None if saved == current else (where, saved, current)


def _compared(field, value):
    """What of a setting's value must be the run's: all of it, but of a data file its name."""
    return store.data_file(value) if field == "dataset" else value


def resumed_sweep(sweep, folder, name, flagged):
    """The sweep a `--resume` of run `name` (Tune folder `folder`) goes on with: as launched.
    A setting the command line leaves to the sweep file (not in `flagged`) comes from the
    run where they differ; any other difference, a flag's or the sweep file's, is bad input
    naming the setting, the run's value and the one received. Returns (sweep, {setting: the
    run's value} taken from the run)."""
    saved = _saved_settings(folder)
    if saved is None:
        return sweep, {}
    current = run_settings(sweep)
    taken = {field: saved[field] for field in FLAG_FIELDS
             if field not in flagged and saved.get(field) is not None and saved[field] != current[field]}
    if taken:
        sweep = sweep.with_overrides(**taken)
        current = run_settings(sweep)
    # a flag's setting first: --max-epochs also narrows `families` (`Sweep.with_overrides`)
    differ = sorted((field for field in RUN_FIELDS if field in saved
                     and _compared(field, saved[field]) != _compared(field, current[field])),
                    key=lambda field: field not in FLAG_FIELDS)
    if differ:
        field = differ[0]
        where, was, now = _difference(saved[field], current[field]) or ("", saved[field], current[field])
        flag = f" (--{field.replace('_', '-')})" if field in FLAG_FIELDS else ""
        more = f"; also {', '.join(differ[1:])}" if len(differ) > 1 else ""
        raise LrsweepError(f"Argument `{field}{where}`{flag} must be what run {name!r} was launched with, "
                           f"{json.dumps(was)}, to resume it (Tune's saved state goes on with the run's settings; "
                           f"another value makes another run: launch it under another name){more}. Received: "
                           f"{field}{where}={json.dumps(now)}")
    _check_results_folder(saved.get("results"), sweep, name)
    return sweep, taken


def _check_results_folder(launched, sweep, name):
    """A resume stores what it trains in its own results folder. Another one than the run's,
    lacking trials the run's holds (not moved there, not copied), would split the run: its
    ranking and confirmation runs read the trials of one folder. Bad input then."""
    given = _results_folder(sweep)
    if not isinstance(launched, str) or launched == given:
        return
    try:
        missing = _run_trials(launched, name) - _run_trials(given, name)
    except (OSError, LrsweepError, pa.ArrowException):  # a folder that cannot be read from here (credentials)
        return
    if missing:
        raise LrsweepError(f"Argument `results` must be a folder holding the trials run {name!r} has stored, as "
                           f"{json.dumps(launched)} does ({len(missing)} of them not in this one), to resume it: what "
                           f"the resume trains is stored in its results, and the run's ranking and confirmation runs "
                           f"read one folder (to go on elsewhere, move or copy the folder there first). Received: "
                           f"results={json.dumps(sweep.results)}")


def _run_trials(root, name):
    """The ids of the trials of run `name` that the store at `root` holds (none where it is not)."""
    return set(store.read_table(root, "trials", sweep=name)["trial_id"].to_pylist())


@contextlib.contextmanager
def holding(folder, name):
    """Hold run `name`'s lock (a file in its Tune folder `folder`, made if need be) while the
    block runs; the system drops it however the process ends, so that a killed launch's run
    can be resumed at once. LrsweepError where another launch holds it. No lock on s3:// or
    gs://, which have none, nor where the filesystem refuses one."""
    import fcntl

    if store.is_uri(folder):
        yield
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_FILE), "a+") as lock:
        locked = _lock(lock, name)
        if locked:
            lock.seek(0)
            lock.truncate()
            lock.write(f"process {os.getpid()} on {socket.gethostname()}")
            lock.flush()
        try:
            yield
        finally:
            if locked:
                fcntl.flock(lock, fcntl.LOCK_UN)


def check_not_running(folder, name):
    """LrsweepError where another launch runs run `name` now (holds the lock `holding`
    takes): said before a launch reads its data, which can take a while and hundreds of MB.
    Nothing made or written."""
    import fcntl

    if store.is_uri(folder):
        return
    try:
        lock = open(os.path.join(folder, LOCK_FILE))
    except OSError:  # never launched here (or unreadable: the launch's own hold decides)
        return
    with lock:
        if _lock(lock, name):
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lock(lock, name):
    """Lock the open lock file `lock` of run `name` without waiting: True, or False on a
    filesystem without locks; LrsweepError, naming the holder it wrote, where another
    launch holds it."""
    import fcntl

    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "a process"
        raise LrsweepError(f"Argument `name` names a run that another launch is running now ({holder}): wait "
                           f"for it to end, or stop it, then --resume it. Received: name={name!r}") from None
    except OSError:  # a filesystem without locks
        return False
