"""What lrsweep costs inside and around a trial.

    overhead     seconds per epoch of an lrsweep trial (reporting each epoch through Tune,
                 reading the rate, the history) against a plain `model.fit` epoch of the same
                 compiled model on the same data, in the same kind of process (a one-CPU Ray
                 worker); steady state: the median time between epoch ends, epoch 1 excluded
    memory       peak memory (PSS, so shared object-store pages count once) of the whole
                 process tree of `lrsweep launch` running 2 trials at once on a ~600 MB
                 dataset of CIFAR-10 shape, against the same sweep on a tiny dataset
    bookkeeping  500 trials of one short epoch of a tiny model: the time a trial slot sits
                 idle between trials (the driver's and Tune's cost per trial), and the
                 store's write time as the driver reports it
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

from benchmarks.lrsweep_runs import ENV, ROOT, lrsweep_command, trial_phase
from benchmarks.workloads import SCHEDULES

# --- per-epoch overhead -----------------------------------------------------------------

OVERHEAD_SCRIPT = r"""
import json, sys, time
import numpy as np
import pandas as pd
import ray
from lrsweep import Sweep
from lrsweep.run.driver import launch
from lrsweep.run import trial as lrsweep_trial

epochs, results = int(sys.argv[1]), sys.argv[2]
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")

@ray.remote(num_cpus=1)
def plain_fit(epochs):
    lrsweep_trial._configure_tensorflow(1)  # one thread, as a trial has
    import keras
    from benchmarks.workloads import workloads, build_trial
    w = workloads("/tmp/lrsweep-bench")["small"]
    data = w.load()
    ends = []

    class Ends(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.time())

    model, fit = build_trial(w, data, w.configs[2])
    spe = -(-len(data.x_train) // w.batch_size)
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], steps_per_execution=spe)
    model.fit(**{**fit, "epochs": epochs, "callbacks": [Ends()]})
    return ends

plain = np.diff(ray.get(plain_fit.remote(epochs)))[1:]
sweep = Sweep(name="overhead", dataset="digits", validation_split=0.2, model_args={"hidden": (128,)},
              configs=[{"family": "step", "initial_lr": 0.1, "drop": 0.5, "epochs_drop": 5}],
              max_epochs=epochs, early_stopping=None, results=results)
launch(sweep, print_fn=lambda line: None)
ends = pd.read_parquet(results + "/epochs").sort_values("epoch")["end_time"]
ends = (ends - ends.iloc[0]).dt.total_seconds().to_numpy()
ray.shutdown()
print(json.dumps({"plain": float(np.median(plain)), "lrsweep": float(np.median(np.diff(ends)[1:]))}))
"""


def overhead(folder, epochs=40, quick=False):
    results = os.path.join(folder, "results", "overhead")
    done = subprocess.run([sys.executable, "-c", OVERHEAD_SCRIPT, str(10 if quick else epochs), results],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["overhead"] = figures["lrsweep"] / figures["plain"] - 1
    return figures


# --- memory ------------------------------------------------------------------------------

def _tree(root_pid):
    """The pids of `root_pid` and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def _pss(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
        except (OSError, StopIteration):
            pass
    return total


def _peak_memory_of(args):
    """(peak PSS of the process tree of `python -m lrsweep ARGS`, samples) sampled every 0.2 s."""
    proc = subprocess.Popen([sys.executable, "-m", "lrsweep", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    samples = []

    def sample():
        while proc.poll() is None:
            samples.append((time.time(), _pss(_tree(proc.pid))))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = proc.communicate(timeout=1800)
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return max(s for _, s in samples), samples


def memory(folder, rows=50_000, quick=False):
    """Peak memory with a CIFAR-shaped dataset of `rows` images (float32: rows * 12 KB) vs 500."""
    rows = 5_000 if quick else rows
    figures = {}
    for label, n in (("tiny", 500), ("large", rows)):
        path = os.path.join(folder, f"cifar_shape_{n}.npz")
        if not os.path.exists(path):
            rng = np.random.default_rng(0)
            np.savez(path, x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 10, n))
        sweep = os.path.join(folder, f"memory_{label}.py")
        with open(sweep, "w") as f:
            f.write("from lrsweep import Sweep\n"
                    f"SWEEP = Sweep(name='memory', dataset='npz:{path}', validation_split=0.2, "
                    "model_args={'hidden': (16,)}, batch_size=256, max_epochs=2, early_stopping=None, "
                    f"configs={SCHEDULES[:4]!r})\n")
        results = os.path.join(folder, "results", f"memory-{label}")
        subprocess.run(["rm", "-rf", results], check=True)
        peak, samples = _peak_memory_of(["launch", sweep, "--results", results])
        phase = trial_phase(results)
        figures[f"peak_{label}"] = peak
        # while trials train: the steady state, past the driver's load and its put into the store
        figures[f"trial_peak_{label}"] = max(m for t, m in samples if t >= phase["first_start"])
        figures[f"dataset_{label}"] = n * 32 * 32 * 3 * 4
        figures[f"trials_{label}"] = phase["trials"]
    grown = figures["dataset_large"] - figures["dataset_tiny"]
    figures["extra_per_dataset"] = (figures["peak_large"] - figures["peak_tiny"]) / grown
    figures["trial_extra_per_dataset"] = (figures["trial_peak_large"] - figures["trial_peak_tiny"]) / grown
    return figures


# --- bookkeeping at scale ------------------------------------------------------------------

def bookkeeping(folder, trials=500, quick=False):
    trials = 40 if quick else trials
    configs = [{"family": "constant", "initial_lr": float(lr)} for lr in np.geomspace(1e-3, 0.5, trials)]
    sweep = os.path.join(folder, "bookkeeping.py")
    with open(sweep, "w") as f:
        f.write("from lrsweep import Sweep\n"
                "SWEEP = Sweep(name='bookkeeping', dataset='digits', subsample=200, validation_split=0.2, "
                "model_args={'hidden': (8,)}, batch_size=64, max_epochs=1, early_stopping=None, "
                f"configs={configs!r})\n")
    results = os.path.join(folder, "results", "bookkeeping")
    subprocess.run(["rm", "-rf", results], check=True)
    seconds, done = lrsweep_command("launch", sweep, "--results", results)
    phase = trial_phase(results)
    stored = re.search(r"in (\d+) files \(([\d.]+) s writing\)", done.stdout)
    slots = 2
    idle = phase["trial_phase"] * slots - phase["trial_seconds"]
    return {"seconds": seconds, "trials": phase["trials"], "trial_phase": phase["trial_phase"],
            "trial_seconds": phase["trial_seconds"], "idle_ms_per_trial": 1000 * idle / phase["trials"],
            "store_files": int(stored.group(1)), "store_write_seconds": float(stored.group(2))}


if __name__ == "__main__":
    folder = "/tmp/lrsweep-bench"
    os.makedirs(folder, exist_ok=True)
    which = sys.argv[1]
    print(json.dumps({"overhead": overhead, "memory": memory, "bookkeeping": bookkeeping}[which](
        folder, quick="--quick" in sys.argv), indent=1))
