"""Time to a good schedule: lrsweep against Optuna + MedianPruner, on the default sweeps'
search spaces (sweeps/digits.py, sweeps/ionosphere.py), several seeds each.

For each dataset the best reachable validation accuracy is learnt first from one long
lrsweep search (`--long` trials). Two targets follow: easy = that best minus 0.5 points or
one validation sample, whichever is larger; hard = that best. Each run (lrsweep: the whole
`launch` command; Optuna: one process, `n_jobs` = workers, TPE, MedianPruner, the same
conditional space and the same Keras trials) is watched from its start: the wall time and
the epochs trained until its best trial first reaches each target (a `budget` at most),
and the best accuracy reached by 30, 60 and 120 s. Optuna's objective trains lrsweep's own
trials (`build_trial`) from the same seeded sweep file, so a configuration gives the same
accuracies under both and each seed is a paired comparison. Luck dominates single
searches: every seed is reported, and the medians, and the long search's best schedule is
trained again with 8 seeds to show how far luck alone moves it.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from benchmarks.lrsweep_runs import ENV, ROOT, RunningRay

DATASETS = {"digits": ("sweeps/digits.py", None), "ionosphere": ("sweeps/ionosphere.py", os.path.join(ROOT, "tests/data"))}
MARKS = (30, 60, 120)


def _sweep_with_seed(folder, dataset, seed, num_samples):
    """The dataset's default sweep with another seed and trial count (and the local copy of
    its data): the one file both lrsweep and the Optuna peer run."""
    path = os.path.join(folder, f"to_target_{dataset}_{seed}.py")
    with open(path, "w") as f:
        f.write("from lrsweep.sweep.spec import load_sweep\n"
                f"SWEEP = load_sweep({os.path.join(ROOT, DATASETS[dataset][0])!r}).with_overrides("
                f"seed={seed}, num_samples={num_samples}, data_dir={DATASETS[dataset][1]!r})\n")
    return path


def _results(folder, dataset, seed, run="cold"):
    """Each run's own results folder: the long search's (seed 0, cold) is read again after
    the others, and a seed's cold and Ray-running runs are kept to compare."""
    return os.path.join(folder, "results", f"to_target-{dataset}-{seed}-{run}")


def lrsweep_curve(folder, dataset, seed, budget, num_samples=2000, address=None, run=None):
    """Every epoch of a `launch` stopped after `budget` seconds: (seconds since the command
    started, validation accuracy) in the order the epochs ended. `address`: join that
    running Ray instead of starting one. `run`: the results folder's label (by default
    "cold" or "running")."""
    results = _results(folder, dataset, seed, run or ("running" if address else "cold"))
    subprocess.run(["rm", "-rf", results], check=True)
    joining = ["--address", address] if address else []
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "lrsweep", "launch", _sweep_with_seed(folder, dataset, seed,
                                                                                          num_samples),
                             "--results", results, *joining],
                            cwd=ROOT, env={**ENV, "RAY_AUTH_MODE": "token"} if address else ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the driver only: Tune stops its trials, the store is flushed
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its Ray outlived it
        except ProcessLookupError:
            pass
    epochs = pd.read_parquet(os.path.join(results, "epochs"))
    seconds = (epochs["end_time"].astype("int64") / 1e6 - start).to_numpy()
    order = np.argsort(seconds)
    return seconds[order], epochs["val_accuracy"].to_numpy()[order]


OPTUNA_SCRIPT = r"""
import json, sys, threading, time
start = time.time()
import optuna
from lrsweep.run.driver import sweep_data, trial_arrays, training_setup
from lrsweep.run.trial import build_trial
from lrsweep.sweep.space import SearchSpace, sampled_params, trial_config
from lrsweep.sweep.spec import load_sweep
import keras

sweep_path, budget, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
sweep = load_sweep(sweep_path)  # the file lrsweep's run of this seed launches
data, setup = trial_arrays(sweep_data(sweep)), training_setup(sweep)
space = SearchSpace(sweep.arms)
curve, lock = [], threading.Lock()

def objective(trial):
    fixed = space(trial)
    label = trial.params["family"]
    params = sampled_params(label, {**trial.params, **fixed})
    with lock:  # one model at a time takes the seeded weights: each trial is the one lrsweep would train
        model, fit, _ = build_trial(trial_config(sweep.arms[label], params), data, setup)

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with lock:
                curve.append((time.time() - start, float(logs["val_accuracy"])))
            trial.report(float(logs["val_accuracy"]), epoch)
            if trial.should_prune() or time.time() - start > budget:
                self.model.stop_training = True
                self.pruned = True

    report = Report()
    history = model.fit(**{**fit, "callbacks": [*fit["callbacks"], report]})
    if getattr(report, "pruned", False):
        raise optuna.TrialPruned()
    return float(history.history["val_accuracy"][-1])

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sweep.seed),
                            pruner=optuna.pruners.MedianPruner())
study.optimize(objective, timeout=budget, n_jobs=workers, catch=(Exception,))
print(json.dumps(curve))
"""


def optuna_curve(folder, dataset, seed, budget, workers=2):
    sweep = _sweep_with_seed(folder, dataset, seed, num_samples=2000)
    done = subprocess.run([sys.executable, "-c", OPTUNA_SCRIPT, sweep, str(budget), str(workers)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=budget + 600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    curve = json.loads(done.stdout.strip().splitlines()[-1])
    seconds, accuracy = (np.array(c) for c in zip(*curve)) if curve else (np.array([]), np.array([]))
    return seconds, accuracy


SPREAD_SCRIPT = r"""
import json, sys
from lrsweep.run.driver import sweep_data, trial_arrays, training_setup
from lrsweep.run.trial import build_trial
from lrsweep.sweep.space import trial_config
from lrsweep.sweep.spec import load_sweep

sweep, label, params, seeds = load_sweep(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
data, setup = trial_arrays(sweep_data(sweep)), training_setup(sweep)
config = trial_config(sweep.arms[label], params)
best = []
for seed in seeds:
    model, fit, _ = build_trial({**config, "seed": seed}, data, setup)
    best.append(max(model.fit(**fit).history["val_accuracy"]))
print(json.dumps(best))
"""


def seed_spread(folder, dataset, seeds=tuple(range(8))):
    """How far luck alone moves one schedule: the long search's best trial trained again to
    the full budget with other seeds (weights and batches), the best validation accuracy
    of each."""
    trials = pd.read_parquet(os.path.join(_results(folder, dataset, 0), "trials"))
    best = trials.loc[trials["best_val_accuracy"].idxmax()]
    label, params = f"{best.optimizer}/{best.family}", json.loads(best.params)
    done = subprocess.run([sys.executable, "-c", SPREAD_SCRIPT, _sweep_with_seed(folder, dataset, 0, 1), label,
                           json.dumps(params), json.dumps(list(seeds))],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {"config": {"family": label, **params}, "seeds": list(seeds), "best": json.loads(done.stdout.strip().splitlines()[-1])}


def validation_rows(folder, dataset):
    """How many rows the runs' validation accuracy is measured on: one of them is the
    smallest step the accuracy can take."""
    from lrsweep.run.driver import sweep_data
    from lrsweep.sweep.spec import load_sweep

    return len(sweep_data(load_sweep(_sweep_with_seed(folder, dataset, 0, 1))).y_val)


def figures(seconds, accuracy, easy, hard, budget):
    """When the running best first reaches each target (seconds, epochs trained), and the
    best accuracy by each mark the run lasted to."""
    best = np.maximum.accumulate(accuracy) if len(accuracy) else accuracy
    out = {}
    for label, target in (("easy", easy), ("hard", hard)):
        hit = np.nonzero(best >= target - 1e-9)[0]
        out[f"{label}_seconds"] = float(seconds[hit[0]]) if len(hit) else None
        out[f"{label}_epochs"] = int(hit[0] + 1) if len(hit) else None
    for mark in MARKS:
        reached = best[seconds <= mark]
        out[f"best_at_{mark}"] = float(reached[-1]) if len(reached) and mark <= budget else None
    return out


def to_target(folder, seeds=(1, 2, 3, 4, 5), budget=300, long=600, quick=False, datasets=tuple(DATASETS),
              ray_running=False):
    """`ray_running`: also lrsweep joining a Ray started before its command, the service
    case: one `ray start --head` per dataset (not timed), where a short sweep of the same
    file has run before the timed ones, as on a cluster that serves many sweeps."""
    if quick:
        seeds, budget, long = (1,), 40, 60
    report = {}
    for dataset in datasets:
        _, accuracy = lrsweep_curve(folder, dataset, seed=0, budget=long)
        hard = float(accuracy.max())
        easy = hard - max(0.005, 1 / validation_rows(folder, dataset))
        runs = {"lrsweep": [], "optuna": []} | ({"lrsweep, Ray running": []} if ray_running else {})
        with contextlib.ExitStack() as stack:
            if ray_running:
                ray = stack.enter_context(RunningRay(2))
                lrsweep_curve(folder, dataset, 0, budget, num_samples=2, address=ray.address,
                              run="earlier")  # an earlier sweep
            for seed in seeds:
                runs["lrsweep"].append({"seed": seed, **figures(*lrsweep_curve(folder, dataset, seed, budget), easy,
                                                                hard, budget)})
                if ray_running:
                    curve = lrsweep_curve(folder, dataset, seed, budget, address=ray.address)
                    runs["lrsweep, Ray running"].append({"seed": seed, **figures(*curve, easy, hard, budget)})
                runs["optuna"].append({"seed": seed, **figures(*optuna_curve(folder, dataset, seed, budget), easy,
                                                               hard, budget)})
        report[dataset] = {"hard": hard, "easy": easy, "budget": budget, "long": long, "runs": runs,
                           "seed_spread": seed_spread(folder, dataset, seeds=(0, 1) if quick else tuple(range(8)))}
    return report


def medians(runs, key, budget):
    """The median over seeds, a run that never got there counting as the budget."""
    values = [r[key] if r[key] is not None else budget for r in runs]
    return float(np.median(values))


def median_or_none(runs, key):
    """The median over the runs that have a value, or None."""
    values = [r[key] for r in runs if r[key] is not None]
    return float(np.median(values)) if values else None


if __name__ == "__main__":
    folder = "/tmp/lrsweep-bench"
    os.makedirs(folder, exist_ok=True)
    print(json.dumps(to_target(folder, quick="--quick" in sys.argv), indent=1))
