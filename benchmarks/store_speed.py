"""The results store at scale: `rank` and a typical `query` over a store of 10,000 trials and
1,000,000 epoch rows, against the same commands over a store of 10 trials; and the time to
write such a store the way the driver does (a file per table per flush).

Both commands are timed whole (`python -m lrsweep ...` in a fresh process), as a user runs
them: the ratio says how much of their time grows with the store.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERY = ("SELECT t.optimizer || '/' || t.family AS family, count(DISTINCT t.trial_id) AS trials, "
         "max(e.val_accuracy) AS best, avg(e.seconds) AS epoch_seconds "
         "FROM trials t JOIN epochs e USING (dataset, sweep, trial_id) GROUP BY 1 ORDER BY best DESC")
FAMILIES = [("constant", {"initial_lr": 0.1}), ("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 10}),
            ("exponential", {"initial_lr": 0.1, "k": 0.05}), ("cosine", {"initial_lr": 0.1, "alpha": 0.0,
                                                                         "warmup_epochs": 0})]


def build_store(root, trials, epochs_per_trial, trials_per_file=500, sweeps=4):
    """A store of `trials` trials with `epochs_per_trial` epochs each, written through
    `store.write_rows` in files of `trials_per_file` trials; returns seconds spent writing."""
    import datetime as dt

    from lrsweep.results import store

    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    writing = 0.0
    for first in range(0, trials, trials_per_file):
        ids = range(first, min(trials, first + trials_per_file))
        trial_rows, epoch_rows = [], []
        for i in ids:
            family, params = FAMILIES[i % len(FAMILIES)]
            acc = np.minimum(0.99, 0.5 + 0.45 * (1 - np.exp(-np.arange(1, epochs_per_trial + 1) / 10))
                             + rng.normal(0, 0.02, epochs_per_trial))
            trial_rows.append({"trial_id": f"t{i:06d}", "family": family, "optimizer": "sgd", **params,
                               "params": json.dumps(params), "seed": 0, "stage": "search", "status": "completed",
                               "epochs": epochs_per_trial, "best_epoch": int(acc.argmax()) + 1,
                               "best_val_accuracy": float(acc.max()), "final_val_accuracy": float(acc[-1]),
                               "final_val_loss": float(1 - acc[-1]), "best_val_loss": float(1 - acc.max()),
                               "wall_seconds": 10.0, "node": "n", "start_time": start, "end_time": start,
                               "metric": "val_accuracy", "metric_mode": "max", "max_epochs": epochs_per_trial,
                               "steps_per_epoch": 45, "batch_size": 32, "granularity": "epoch", "model": "mlp",
                               "optimizer_args": "{}", "dataset_source": "digits"})
            epoch_rows += [{"trial_id": f"t{i:06d}", "epoch": e + 1, "lr": 0.1, "loss": float(1 - a),
                            "accuracy": float(a), "val_loss": float(1 - a), "val_accuracy": float(a),
                            "seconds": 0.1, "end_time": start} for e, a in enumerate(acc)]
        sweep = f"bench-{first * sweeps // max(trials, 1)}"
        t = time.perf_counter()
        store.write_rows(root, "trials", "digits", sweep, trial_rows)
        store.write_rows(root, "epochs", "digits", sweep, epoch_rows)
        writing += time.perf_counter() - t
    return writing


def timed(*args, repeats=3):
    """The median wall time of `python -m lrsweep ARGS` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lrsweep", *args], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT})
        times.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
    return sorted(times)[len(times) // 2]


def store_speed(folder, trials=10_000, epochs_per_trial=100, quick=False):
    if quick:
        trials, epochs_per_trial = 1000, 20
    figures = {}
    for label, (n, e) in {"tiny": (10, 10), "large": (trials, epochs_per_trial)}.items():
        root = os.path.join(folder, f"store-{label}")
        figures[f"write_{label}"] = build_store(root, n, e)
        figures[f"rank_{label}"] = timed("rank", "--results", root)
        figures[f"query_{label}"] = timed("query", QUERY, "--results", root)
    figures["rows_large"] = trials * epochs_per_trial
    figures["rank_ratio"] = figures["rank_large"] / figures["rank_tiny"]
    figures["query_ratio"] = figures["query_large"] / figures["query_tiny"]
    return figures


if __name__ == "__main__":
    folder = "/tmp/lrsweep-bench"
    os.makedirs(folder, exist_ok=True)
    print(json.dumps(store_speed(folder, quick="--quick" in sys.argv), indent=1))
