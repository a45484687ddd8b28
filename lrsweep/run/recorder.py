"""The driver's record of a sweep: every report of every trial, into the results store.

A Tune callback, so it runs in the driver, the store's only writer. Reports are buffered
and written as one file per table at most every `flush_seconds` (and when the run ends):
few files for a fast reader, and a crash loses at most that many seconds of reports.
Those are never reports of a trial that `--resume` will not run again: Tune saves its
experiment state (which trials are done) with its callbacks' state, and the Recorder
writes what it holds before it gives its own.
"""

import datetime as dt
import json
import math
import time
from pathlib import PurePosixPath

import pyarrow.fs as pafs
from ray import tune

from lrsweep.errors import StoreWriteError, warn
from lrsweep.results import store
from lrsweep.results.store import LOGS
from lrsweep.run.trial import arm_of
from lrsweep.schedules.registry import check_schedule


def _timestamp(seconds):
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc) if seconds else None


def summarize(history, metric, mode):
    """best/final values of each log and the best epoch, over a trial's epoch rows."""
    summary = {}
    for log in LOGS:
        values = [row[log] for row in history if math.isfinite(row.get(log, math.nan))]
        best = min if log.endswith("loss") else max
        summary[f"best_{log}"] = best(values) if values else None
        summary[f"final_{log}"] = history[-1].get(log) if history else None
    finite = [row for row in history if math.isfinite(row.get(metric, math.nan)) and row.get("status") != "diverged"]
    if finite:
        pick = max if mode == "max" else min
        summary["best_epoch"] = pick(finite, key=lambda row: row[metric])["epoch"]
    return summary


def _ended_in_storage(trials):
    """The ids of those of `trials` that Tune's experiment state in storage records as ended
    (TERMINATED): its newest `experiment_state-*.json`, which Tune copies there after each
    save, in the background (and not at all while an earlier copy still runs). None of them
    while that state is out of reach, or cut short by a copy under way."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    storage = trials[0].storage
    fs = storage.storage_filesystem
    try:
        path = _find_newest_experiment_checkpoint(storage.experiment_fs_path, fs)
        if path is None:
            return set()
        with fs.open_input_stream(path) as stream:
            saved = [json.loads(trial) for trial, _ in json.loads(stream.read())["trial_data"]]
        ended = {trial["trial_id"] for trial in saved if trial["status"] == "TERMINATED"}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return ended & {trial.trial_id for trial in trials}


def _drop_checkpoints(trial):
    """Delete the checkpoints Tune keeps of `trial` in the sweep's storage (a local folder or
    a bucket: Tune's own filesystem for it), and forget them (Tune's list of them in the
    driver), so that they are not deleted twice."""
    fs, folder = trial.storage.storage_filesystem, trial.path
    try:
        _delete_checkpoint_folders(fs, folder)
    except OSError as e:  # storage out of reach: the checkpoints stay, the sweep goes on
        warn(f"could not delete the checkpoints of trial {trial.trial_id} in {folder}: {e}")
        return
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_results, manager._latest_checkpoint_result = [], None
    trial.run_metadata.invalidate_cache()


def _delete_checkpoint_folders(fs, folder):
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
            fs.delete_dir(info.path)


def _drop_checkpoints_of_lost_trials(trials):
    """Delete the checkpoints in the trial folders of the experiment that belong to none of
    its `trials`: those of a trial begun after Tune's last save before a kill, which
    `--resume` trains again as a new trial. No state of Tune's names them, so nothing else
    would. Only in Tune's trial folders (`<trainable>_<trial id>_...`)."""
    storage = trials[0].storage
    fs, experiment = storage.storage_filesystem, storage.experiment_fs_path
    known = {PurePosixPath(trial.path).name for trial in trials}
    prefixes = tuple({f"{trial.trainable_name}_" for trial in trials})
    try:
        for info in fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True)):
            if (info.type == pafs.FileType.Directory and info.base_name.startswith(prefixes)
                    and info.base_name not in known):
                _delete_checkpoint_folders(fs, info.path)
    except OSError as e:
        warn(f"could not delete the checkpoints of trials run again after a kill, in {experiment}: {e}")


def _forget_deleted_checkpoints(trial):
    """Tune deletes a trial's oldest checkpoint as it registers a new one, and saves the list
    of those it keeps in its experiment state at its next save (every 10 s or more): a
    launch killed in between leaves a state that names a deleted checkpoint. After
    `--resume`, Tune then failed to delete it again at the trial's next checkpoint (an ERROR
    in the output, with the whole report), or, when it named the latest, to restore the
    trial from it (the trial failed through its retries). So before Tune restores a trial,
    the trial forgets the checkpoints of that list no longer in storage, and goes on from
    the latest of it still there (from its first epoch if none is)."""
    manager = trial.run_metadata.checkpoint_manager
    try:
        kept = [result for result in manager._checkpoint_results if result.checkpoint.filesystem.get_file_info(
            result.checkpoint.path).type != pafs.FileType.NotFound]
    except OSError:  # storage out of reach: Tune's own error follows
        return
    if len(kept) < len(manager._checkpoint_results):
        manager._checkpoint_results = kept
        if manager._latest_checkpoint_result not in kept:
            manager._latest_checkpoint_result = kept[-1] if kept else None
        trial.run_metadata.invalidate_cache()  # Tune's next save writes the list as it is now


def trial_key(label, params, seed, stage, budget, settings):
    """What tells a trial's training apart in the store, as its row gives it: the family,
    its parameters as stored (with their defaults), the seed, the stage and the budget."""
    family = label.split("/")[1]
    params = check_schedule(family, params, settings["max_epochs"], settings["granularity"])
    return label, json.dumps(params, sort_keys=True), int(seed), stage, int(budget)


class Recorder(tune.Callback):
    """Writes the `epochs` and `trials` tables of one sweep and prints its progress."""

    def __init__(self, *, results, dataset, sweep_name, settings, total, print_fn=print, flush_seconds=2.0):
        self.results, self.dataset, self.sweep_name = results, dataset, sweep_name
        self.settings, self.total, self.print = settings, total, print_fn
        self.flush_seconds = flush_seconds
        self.histories = {}  # trial_id -> the epoch rows of its current attempt
        self.pending = {"epochs": [], "trials": []}
        self.written = {"epochs": 0, "trials": 0, "files": 0, "seconds": 0.0}
        self.last_flush = time.monotonic()
        self.statuses = {}
        self.best = None
        self.started = time.monotonic()

    # Tune's hooks

    def setup(self, **info):
        self.started = time.monotonic()  # this launch's start, also on resume (the Recorder comes from tuner.pkl)
        self.starts = 0  # trials started by this launch
        # trials that ended with checkpoints, which they need no more once Tune's state in
        # storage says they ended (before that, a kill leaves a state in which they run)
        self.ended = []
        counted = getattr(self, "counted", [])  # after `set_state`, which Tune calls first
        for trial in counted:
            self.statuses[trial["trial_id"]] = trial["status"]
            self._consider(trial["value"], trial["label"], trial["status"])
        if counted:
            self.print(f"{len(counted)} trial{'s' * (len(counted) != 1)} stored after Tune's last save before the "
                       f"launch stopped count{'s' * (len(counted) == 1)} as done: not trained again")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.starts += 1
        self.statuses.pop(trial.trial_id, None)  # one a `--resume` trains again has not ended (yet)
        self.histories.setdefault(trial.trial_id, [])  # a retry's history goes on (`on_trial_result`)
        if trial.checkpoint is not None:  # a retry, or a trial `--resume` continues
            _forget_deleted_checkpoints(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        history = self.histories.setdefault(trial.trial_id, [])
        first = int(result["rows"][0]["epoch"]) if result["rows"] else None
        if history and first is not None and first <= history[-1]["epoch"]:
            self._went_back(trial.trial_id, history, first)
        for epoch in result["rows"]:  # every epoch since the trial's last report
            row = {"trial_id": trial.trial_id, "epoch": int(epoch["epoch"]), "lr": epoch["lr"],
                   "seconds": epoch["seconds"], "end_time": _timestamp(epoch["time"]),
                   **{log: epoch.get(log) for log in LOGS}}
            history.append({**row, "status": epoch["status"], "time": epoch["time"]})
            self.pending["epochs"].append(row)
        self._flush_if_due()

    def _went_back(self, trial_id, history, first):
        """A trial retried (after a failure) or continued (`--resume`) trains again from epoch
        `first`: from its checkpoint's next epoch, or from its first. Its history keeps the
        epochs before, and the rows of the later epochs not written yet are dropped; the
        written ones are superseded by the new attempt's, written later (`store.current_attempts`)."""
        history[:] = [row for row in history if row["epoch"] < first]
        self.pending["epochs"] = [row for row in self.pending["epochs"]
                                  if row["trial_id"] != trial_id or row["epoch"] < first]

    def on_trial_complete(self, iteration, trials, trial, **info):
        history = self.histories.get(trial.trial_id, [])
        last = trial.last_result or {}
        if last.get("status") == "diverged":
            status = "diverged"
        elif history and history[-1]["epoch"] >= self._budget(trial.config):
            status = "completed"
        else:
            status = "early_stopped"
        self._finish(trial, status, None)
        # Tune marks `done` in the last result of a trial whose function returned in place, after
        # its last report: a save of Tune's state in between (every 10 s, or forced by
        # checkpoints) left Tune's copy of that result without it for every later save, and a
        # `--resume` took the trial for one a Ctrl-C stopped (`driver._run_stage`)
        trial.run_metadata.invalidate_cache()
        if trial.checkpoint is not None:
            self.ended.append(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        text = trial.get_error() or ""
        lines = [line.strip() for line in str(text).splitlines() if line.strip()]
        self._finish(trial, "error", lines[-1] if lines else "unknown error")

    def on_step_end(self, iteration, trials, **info):
        self._flush_if_due()

    def on_experiment_end(self, trials, **info):
        self.flush()
        # Tune saved its state just before and waited for its copy to storage (unless the run
        # failed): also the trials that a killed launch left checkpoints of; not those a
        # Ctrl-C stopped (Tune saved them running, then marks them TERMINATED too)
        self._drop_checkpoints_of_ended([trial for trial in trials if trial.checkpoint is not None])
        if trials:
            _drop_checkpoints_of_lost_trials(trials)
        # a resume of a stage whose trials had all ended (and were stored); not a Ctrl-C before
        # any trial started (Tune marks the trials it stops then TERMINATED all the same), nor
        # one before the trials that ended in error (which a resume trains again) started
        ended_before = (not self.starts and not self.written["trials"] and trials
                        and all(self.statuses.get(trial.trial_id, "error") != "error" for trial in trials))
        if ended_before:
            self.print(f"nothing left to train here: the {len(self.statuses)} trials ended before this launch, and are "
                       f"stored")
        else:
            self.print(self.summary())

    # Tune's experiment state (saved every ~10 s, read back by `--resume`)

    def get_state(self):
        """Called as Tune saves which trials are done, before that state reaches the disk: a
        trial recorded done there is not run again on resume, so its rows are written now."""
        self.flush()
        self._drop_checkpoints_of_ended(self.ended)
        return {"statuses": dict(self.statuses), "best": self.best,
                "histories": {trial_id: list(rows) for trial_id, rows in self.histories.items()}}

    def set_state(self, state):
        """On resume: the progress count and best so far go on from the saved state, and the
        histories of the trials then running, which go on from their checkpoints."""
        self.statuses, self.best = dict(state["statuses"]), state["best"]
        self.histories = {trial_id: list(rows) for trial_id, rows in state.get("histories", {}).items()}

    def _drop_checkpoints_of_ended(self, trials):
        """Delete the checkpoints of those of `trials` that Tune's state in storage records as
        ended, and no sooner: a launch killed while that state has them running goes on with
        them on `--resume`, from their checkpoints (not their first epoch). The others stay
        in `self.ended` if they are there, for the next save."""
        ended = _ended_in_storage(trials) if trials else set()
        for trial in trials:
            if trial.trial_id in ended:
                _drop_checkpoints(trial)
        self.ended = [trial for trial in self.ended if trial.trial_id not in ended]

    # the store

    def _finish(self, trial, status, error):
        # a trial that ended in error may go on from its checkpoint after a `--resume`
        # (`resume_errored`): its history stays, in the state Tune saves
        history = (self.histories.get if status == "error" else self.histories.pop)(trial.trial_id, [])
        last = trial.last_result or {}
        label, optimizer, family, params = arm_of(trial.config)
        params = check_schedule(family, params, self.settings["max_epochs"], self.settings["granularity"])
        metric, mode = self.settings["metric"], self.settings["mode"]
        start = last.get("trial_start")
        end = history[-1]["time"] if history else time.time()
        row = {
            "trial_id": trial.trial_id, "family": family, "optimizer": optimizer,
            **{name: value for name, value in params.items() if name in store.PARAM_COLUMNS},
            "params": json.dumps(params, sort_keys=True), "seed": trial.config.get("seed", self.settings["seed"]),
            "stage": trial.config.get("stage", "search"), "status": status, "error": error,
            "epochs": len(history), **summarize(history, metric, mode),
            "wall_seconds": end - start if start else None, "node": last.get("node"), "gpu_ids": last.get("gpu_ids"),
            "start_time": _timestamp(start), "end_time": _timestamp(end), "resumed_from": last.get("resumed_from"),
            "metric": metric, "metric_mode": mode, "max_epochs": self.settings["max_epochs"],
            "budget": self._budget(trial.config),
            "steps_per_epoch": last.get("steps_per_epoch"), "batch_size": self.settings["batch_size"],
            "granularity": self.settings["granularity"], "model": self.settings["model_label"],
            "optimizer_args": json.dumps(self.settings["optimizer_args"] if optimizer == self.settings["optimizer"]
                                         else {}, sort_keys=True),
            "dataset_source": self.settings["dataset_source"],
            "training_settings": self.settings.get("training_settings"),
        }
        self.pending["trials"].append(row)
        self.statuses[trial.trial_id] = status
        self._progress(trial.trial_id, label, status, row)
        self._flush_if_due()

    def key_of(self, config):
        """`trial_key` of the trials a trial config trains."""
        label, _, _, params = arm_of(config)
        return trial_key(label, params, config.get("seed", self.settings["seed"]), config.get("stage", "search"),
                         self._budget(config), self.settings)

    def _budget(self, config):
        """The epochs a trial config gives: a rung's of early_stopping="budget", else max_epochs."""
        return config.get("budget", self.settings["max_epochs"])

    def _flush_if_due(self):
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self):
        started = time.perf_counter()
        for table, rows in self.pending.items():
            try:
                written = store.write_rows(self.results, table, self.dataset, self.sweep_name, rows)
            except OSError as e:  # Tune would print it as a traceback, twice (its state's save, then its cleanup)
                raise StoreWriteError(f"cannot write the {table} table of the store {self.results}: "
                                      f"{(str(e) or repr(e)).splitlines()[0]}") from None
            if written:
                self.written[table] += len(rows)
                self.written["files"] += 1
            rows.clear()
        self.written["seconds"] += time.perf_counter() - started
        self.last_flush = time.monotonic()

    def summary(self):
        w = self.written
        return (f"stored {w['trials']} trials and {w['epochs']} epochs in {w['files']} files "
                f"({w['seconds']:.2f} s writing)")

    # progress

    def count_stored(self, trials):
        """On resume, `trials` (dicts of `trial_id`, `label`, `status`, `value`) that were
        stored after Tune's last save before the launch stopped: they count as done, and
        are not trained again (`search.NewConfigs.resume_with`). Told as Tune restores its
        searcher; counted in the progress as the stage starts (`setup`)."""
        self.counted = list(trials)

    def _consider(self, value, label, status):
        """Keep (value, label) as the best so far if it is."""
        if status != "error" and status != "diverged" and value is not None:
            mode = self.settings["mode"]
            if self.best is None or (value > self.best[0] if mode == "max" else value < self.best[0]):
                self.best = (value, label)

    def _progress(self, trial_id, label, status, row):
        metric = self.settings["metric"]
        value = row.get(f"final_{metric}")
        self._consider(value, label, status)
        done = len(self.statuses)
        shown = f"{metric} {value:.4f}" if isinstance(value, float) and status != "diverged" else status
        best = f"best {self.best[0]:.4f} {self.best[1]}" if self.best else "no result yet"
        why = f": {row['error']}" if row.get("error") else ""
        self.print(f"[{time.monotonic() - self.started:6.1f}s] {done:>3}/{self.total} {trial_id} {label:<22} "
                   f"{status:<13} {row['epochs']:>3} epochs  {shown:<22} | {best}{why}")
