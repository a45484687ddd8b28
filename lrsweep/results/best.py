"""The winning schedule, for a plain Keras script: Keras JSON, or a Python snippet.

The schedule is rebuilt by the same builder the trial trained with, from the stored
parameters and steps per epoch, and serialized by Keras itself: a built-in class where one
reproduces the family exactly (`step` is `ExponentialDecay(..., staircase=True)`), else
lrsweep's registered class, whose source `--python` prints so the snippet runs without
lrsweep.
"""

import inspect
import json
import math

import pandas as pd

from lrsweep.errors import LrsweepError
from lrsweep.quiet import import_tensorflow
from lrsweep.results import LOGS
from lrsweep.results.rank import confirmation, confirmation_runs, leading_trial, rank
from lrsweep.results.store import dataset_trials
from lrsweep.schedules.registry import OPTIMIZERS, build_schedule


def trial_row(root, dataset, trial_id=None):
    """The stored row of trial `trial_id` of `dataset`, or of the ranking's best trial."""
    return _chosen(root, dataset, trial_id)[0]


def _chosen(root, dataset, trial_id=None):
    """(`trial_row`, the dataset's trials)."""
    trials = dataset_trials(root, dataset)
    if trial_id is None:
        trial_id = leading_trial(rank(trials), dataset)
    chosen = trials[trials["trial_id"] == trial_id]
    if chosen.empty:
        raise LrsweepError(f"Argument `trial` names no trial of dataset {dataset!r}. Received: trial={trial_id!r}")
    return chosen.sort_values("end_time").iloc[-1], trials


def _confirmation(trials, row):
    """The `confirmation_runs` of trial `row`'s configuration: the metric, how many ended with
    a finite value, their mean and 95% half-width; None where none did."""
    label = f"{row['optimizer']}/{row['family']}"
    runs = confirmation_runs(trials, row)
    column = f"final_{row['metric']}"
    found = confirmation(runs.assign(label=label), column, row["metric_mode"]) if len(runs) else runs.iloc[:0]
    if found.empty or not found["confirmed"].iloc[0] > 0:
        return None
    of = found.iloc[0]
    return {"metric": column, "runs": int(of["confirmed"]), "mean": float(of["confirm_mean"]),
            "ci95": float(of["ci95"]) if math.isfinite(of["ci95"]) else None}


def best_config(root, dataset, trial_id=None):
    """The best trial's (or `trial_id`'s) schedule, optimizer and fit settings as Keras
    objects serialized to JSON-ready dicts."""
    row, trials = _chosen(root, dataset, trial_id)
    if pd.isna(row["steps_per_epoch"]):
        raise LrsweepError(f"Trial {row['trial_id']} ended ({row['status']}) before its first epoch was stored, so the "
                           f"steps per epoch its schedule is built for are unknown. Received: trial={row['trial_id']!r}")
    import_tensorflow()
    import keras

    params = json.loads(row["params"])
    learning_rate, callbacks = build_schedule(row["family"], params, steps_per_epoch=int(row["steps_per_epoch"]),
                                              epochs=int(row["max_epochs"]), granularity=row["granularity"])
    if row["family"] == "constant":
        learning_rate = params["initial_lr"]  # a float is Keras' own exact form of a constant rate
    optimizer = getattr(keras.optimizers, OPTIMIZERS[row["optimizer"]])(
        learning_rate=learning_rate, **json.loads(row["optimizer_args"]))
    schedule = (keras.optimizers.schedules.serialize(learning_rate)
                if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) else None)
    serialized = keras.optimizers.serialize(optimizer)
    if schedule is None:  # Keras gives its float32 variable back (0.1 as 0.10000000149011612): the rate as drawn
        serialized["config"]["learning_rate"] = float(learning_rate)
    metric = row["metric"]
    return {
        "dataset": dataset, "sweep": row["sweep"], "trial_id": row["trial_id"],
        "family": f"{row['optimizer']}/{row['family']}", "params": params,
        # JSON has no NaN or Infinity (a diverged trial's loss): null
        metric: float(row[f"final_{metric}"]) if math.isfinite(row[f"final_{metric}"]) else None,
        # that value's epoch (an early-stopped trial's is not the full run's), and the runs of the same
        # configuration to max_epochs with other seeds, where the sweep confirmed it
        "epochs_trained": int(row["epochs"]), "status": row["status"],
        "confirmed": _confirmation(trials, row),
        "schedule": schedule,
        "optimizer": serialized,
        "callbacks": [{"class_name": type(c).__name__, "config": _callback_config(c)} for c in callbacks],
        "fit": {"epochs": int(row["max_epochs"]), "batch_size": int(row["batch_size"]),
                "steps_per_epoch": int(row["steps_per_epoch"])},
        "needs_lrsweep": bool(schedule and schedule.get("registered_name")),
    }


def _callback_config(callback):
    """A ReduceLROnPlateau's constructor arguments (Keras callbacks have no get_config)."""
    return {name: getattr(callback, name) for name in ("monitor", "factor", "patience", "min_lr", "min_delta",
                                                       "cooldown") if hasattr(callback, name)}


def _call(name, config):
    args = ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "name")
    return f"{name}({args})"


def python_snippet(config):
    """A script fragment that builds the same optimizer in plain Keras, without lrsweep."""
    from lrsweep.schedules import curves

    lines = [f"# lrsweep best --dataset {config['dataset']}: trial {config['trial_id']} of sweep {config['sweep']}, "
             f"{config['family']} {json.dumps(config['params'], sort_keys=True)}", _results_comment(config),
             "import keras", ""]
    schedule = config["schedule"]
    optimizer = dict(config["optimizer"]["config"])
    if schedule:
        if schedule.get("registered_name"):
            cls = getattr(curves, schedule["class_name"])
            lines += ["import math", "", "from keras import ops", ""]
            for piece in (curves.cosine_anneal, curves.polynomial_anneal, curves.ProgressSchedule, cls):
                lines += [inspect.getsource(piece), ""]
            lines.append(f"schedule = {_call(schedule['class_name'], schedule['config'])}")
        else:
            lines.append(f"schedule = keras.optimizers.schedules.{_call(schedule['class_name'], schedule['config'])}")
        lines.append(f"# built for {config['fit']['steps_per_epoch']} optimizer steps per epoch "
                     f"(batch size {config['fit']['batch_size']}): rescale its steps if your data differ")
        optimizer["learning_rate"] = _Raw("schedule")
    keep = {k: v for k, v in optimizer.items() if k in ("learning_rate", "momentum", "nesterov", "beta_1", "beta_2",
                                                        "epsilon", "rho", "initial_accumulator_value")}
    lines.append(f"optimizer = keras.optimizers.{_call(config['optimizer']['class_name'], keep)}")
    callbacks = ", ".join(f"keras.callbacks.{_call(c['class_name'], c['config'])}" for c in config["callbacks"])
    lines.append(f"callbacks = [{callbacks}]")
    lines.append(f"# model.compile(optimizer=optimizer, ...); model.fit(..., epochs={config['fit']['epochs']}, "
                 f"batch_size={config['fit']['batch_size']}, callbacks=callbacks)")
    return "\n".join(lines)


def _results_comment(config):
    """What the trial reached, and its confirmation runs, as a comment line."""
    metric = next(key for key in config if key in LOGS)
    value = config[metric]
    line = (f"# {metric} {value:.4f}" if value is not None else f"# {metric} not a number") + (
        f" after {config['epochs_trained']} of {config['fit']['epochs']} epochs ({config['status']})")
    confirmed = config["confirmed"]
    if confirmed:
        interval = f" ± {confirmed['ci95']:.4f}" if confirmed["ci95"] is not None else ""
        line += (f"; trained again to {config['fit']['epochs']} epochs with {confirmed['runs']} other seeds: "
                 f"{confirmed['metric']} {confirmed['mean']:.4f}{interval} (mean, 95% interval)")
    return line


class _Raw(str):
    """A name printed as code, not as a string literal."""

    def __repr__(self):
        return str(self)
