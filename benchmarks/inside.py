"""What lrsweep costs inside and around a trial.

    overhead     seconds per epoch of an lrsweep trial (reporting each epoch through Tune,
                 reading the rate, the history) against a plain `model.fit` epoch of the same
                 model on the same data, in the same kind of process (a one-CPU Ray worker):
                 the trial's own (`build_trial`: its rate table, its input pipelines) without
                 lrsweep's reporting, and a user's fit of the arrays; steady state: seconds and
                 the process's CPU seconds per epoch from the end of epoch 1 to the end of the
                 last but one, in each of fifteen rounds that alternate the three (A B C,
                 C B A, ...); the medians of the rounds; and lrsweep's callback's own time
    memory       peak memory (PSS, so shared object-store pages count once) of the whole
                 process tree of `lrsweep launch` running 2 trials at once on a ~600 MB
                 dataset of CIFAR-10 shape, against the same sweep on a tiny dataset
    bookkeeping  500 trials of one short epoch of a tiny model: the driver's CPU per trial,
                 the time a trial slot sits idle between two trials (Tune's hand-over), the
                 store's write time as the driver reports it, and how much the reused trial
                 workers' resident memory grows per trial (sampled from outside the driver)
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from benchmarks.lrsweep_runs import ENV, ROOT, trial_phase
from benchmarks.workloads import SCHEDULES

# --- per-epoch overhead -----------------------------------------------------------------

OVERHEAD_SCRIPT = r"""
import dataclasses, json, os, sys, threading, time
import numpy as np
import pandas as pd
import ray
from benchmarks.inside import _process_cpu, _trial_workers
from lrsweep import Sweep
from lrsweep.run.driver import launch, sweep_data, trial_arrays, training_setup
from lrsweep.run import trial as lrsweep_trial

epochs, results = int(sys.argv[1]), sys.argv[2]
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
STEP = {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 5}
SWEEP = Sweep(name="overhead", dataset="digits", validation_split=0.2, model_args={"hidden": (128,)},
              configs=[{"family": "step", **STEP}], max_epochs=epochs, early_stopping=None)
ARRAYS = ray.put(trial_arrays(sweep_data(SWEEP)))  # as `launch` shares them: zero-copy out of the object store
CONFIG, SETUP = {"family": "sgd/step", "sgd": {"step": STEP}}, training_setup(SWEEP)  # the sweep's one trial


@ray.remote(num_cpus=1)
def plain_fit(epochs, same_trial, arrays):
    lrsweep_trial._configure_tensorflow(1)  # one thread, as a trial has
    import keras
    ends = []

    class Ends(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append((time.time(), time.process_time()))  # the CPU of all the process's threads

    if same_trial:  # the trial's own model, rate table and input pipelines: only lrsweep's reporting is missing
        model, fit, _ = lrsweep_trial.build_trial(CONFIG, arrays, SETUP)
    else:  # what a user would write: fit on the arrays, Keras' own schedule
        from benchmarks.workloads import workloads, plain_trial
        w = workloads("/tmp/lrsweep-bench")["small"]
        data = w.load()
        model, fit = plain_trial(w, data, w.configs[2])
        spe = lrsweep_trial.steps_per_epoch(len(data.x_train), w.batch_size)
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], steps_per_execution=spe)
    model.fit(**{**fit, "epochs": epochs, "callbacks": [*fit["callbacks"], Ends()]})
    return ends


@ray.remote(num_cpus=1)
def callback_seconds(epochs, arrays):
    # What lrsweep's callback itself takes per epoch (the rate read, the row; its report to Tune
    # left out: it goes once every 2 s, here once at the end)
    lrsweep_trial._configure_tensorflow(1)
    import keras
    reporter, spent = lrsweep_trial.make_callback_class(keras), []

    class Timed(reporter):
        def on_epoch_begin(self, epoch, logs=None):
            started = time.perf_counter()
            super().on_epoch_begin(epoch, logs)
            spent.append(time.perf_counter() - started)

        def on_epoch_end(self, epoch, logs=None):
            started = time.perf_counter()
            super().on_epoch_end(epoch, logs)
            spent[-1] += time.perf_counter() - started

    model, fit, _ = lrsweep_trial.build_trial(CONFIG, arrays, SETUP)
    timed = Timed(lambda result: None, SETUP["metric"], SETUP["mode"], SETUP["decision_epochs"], epochs, {})
    model.fit(**{**fit, "epochs": epochs, "callbacks": [*fit["callbacks"], timed]})
    return float(np.median(spent[1:]))


def trial_cpu(samples, stop):
    # (time, {pid: CPU seconds}) of the trial's processes (its trainer and its Tune actor) every 5 ms,
    # read from /proc by this thread; the processes are looked for every 0.5 s
    pids, found = [], 0.0
    while not stop.is_set():
        if time.time() - found > 0.5:
            pids, found = list(_trial_workers(os.getpid())), time.time()
        cpu = {pid: used for pid in pids if (used := _process_cpu(pid)) is not None}
        if cpu:
            samples.append((time.time(), cpu))
        time.sleep(0.005)


def per_epoch(wall, cpu):
    # Seconds and CPU seconds per epoch from the end of epoch 1 to the end of the last but one: a
    # trial's report to Tune every 2 s falls inside (its last, after the last epoch, does not)
    return float((wall[-2] - wall[0]) / (len(wall) - 2)), float((cpu[-2] - cpu[0]) / (len(cpu) - 2))


def trial_round(r):
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=trial_cpu, args=(samples, stop))
    sampler.start()
    launch(dataclasses.replace(SWEEP, results=f"{results}/{r}"), print_fn=lambda line: None)
    stop.set()
    sampler.join()
    ends = np.array([t.timestamp() for t in pd.read_parquet(f"{results}/{r}/epochs").sort_values("epoch")["end_time"]])
    # the processes there from the first epoch's end to the last: their CPU summed
    pids = set.intersection(*(set(cpu) for t, cpu in samples if ends[0] <= t <= ends[-1]))
    at, used = zip(*((t, sum(cpu[pid] for pid in pids)) for t, cpu in samples if pids <= set(cpu)))
    return per_epoch(ends, np.interp(ends, at, used))


RUNS = {"plain": lambda r: per_epoch(*zip(*ray.get(plain_fit.remote(epochs, False, ARRAYS)))),
        "plain_same_pipeline": lambda r: per_epoch(*zip(*ray.get(plain_fit.remote(epochs, True, ARRAYS)))),
        "lrsweep": trial_round}
rounds, cpu_rounds = {name: [] for name in RUNS}, {name: [] for name in RUNS}
for r in range(int(sys.argv[3])):
    # in the order A B C, then C B A: a machine slowing or speeding up steadily hits all three alike
    for name in (list if r % 2 == 0 else reversed)(list(RUNS)):
        wall, cpu = RUNS[name](r)
        rounds[name].append(wall)
        cpu_rounds[name].append(cpu)
callback = ray.get(callback_seconds.remote(epochs, ARRAYS))
ray.shutdown()
print(json.dumps({**{key: float(np.median(values)) for key, values in rounds.items()}, "rounds": rounds,
                  "cpu": {key: float(np.median(values)) for key, values in cpu_rounds.items()}, "cpu_rounds": cpu_rounds,
                  "callback": callback}))
"""


def overhead(folder, epochs=120, rounds=15, quick=False):
    """Each figure the median over `rounds` rounds (each round's seconds per epoch over its
    epochs but the first and the last; 120 epochs of 20-50 ms, so that a trial reports to
    Tune once on the way, as it does every 2 s);
    `reporting_rounds`: lrsweep against the same trial's fit without its reporting (the
    `plain_same_pipeline` figures, a name kept for older last-run.json files), round by round.
    `cpu`, `cpu_rounds`, `cpu_reporting_*`: the same in CPU seconds per epoch of the training
    process (all its threads: TensorFlow's, tf.data's, Tune's, Ray's), which time the VM's
    host takes away does not inflate."""
    results = os.path.join(folder, "results", "overhead")
    subprocess.run(["rm", "-rf", results], check=True)  # the script reads every epoch stored there
    done = subprocess.run([sys.executable, "-c", OVERHEAD_SCRIPT, str(10 if quick else epochs), results,
                           str(1 if quick else rounds)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["overhead"] = figures["lrsweep"] / figures["plain"] - 1
    for prefix, medians, rounds in (("", figures, figures["rounds"]), ("cpu_", figures["cpu"], figures["cpu_rounds"])):
        figures[f"{prefix}reporting_overhead"] = medians["lrsweep"] / medians["plain_same_pipeline"] - 1
        figures[f"{prefix}reporting_rounds"] = [mine / plain - 1 for mine, plain in
                                                zip(rounds["lrsweep"], rounds["plain_same_pipeline"])]
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


def _sampled(command, measure, every, timeout):
    """Run `command` from the repository to its end while a thread of this process records
    (time, measure(its pid)) every `every` seconds: the child's own CPU stays its own.
    Returns (its standard output, the samples)."""
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    samples = []

    def sample():
        while proc.poll() is None:
            samples.append((time.time(), measure(proc.pid)))
            time.sleep(every)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = proc.communicate(timeout=timeout)
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return out, samples


def _peak_memory_of(args):
    """(peak PSS of the process tree of `python -m lrsweep ARGS`, samples) sampled every 0.2 s."""
    _, samples = _sampled([sys.executable, "-m", "lrsweep", *args], lambda pid: _pss(_tree(pid)), 0.2, 1800)
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

def bookkeeping_sweep(name, trials, results):
    """`trials` one-epoch trials of a tiny model (constant rates from 1e-3 to 0.5): the
    driver's work per trial, with as little training as a trial can have."""
    from lrsweep import Sweep

    configs = [{"family": "constant", "initial_lr": float(lr)} for lr in np.geomspace(1e-3, 0.5, trials)]
    return Sweep(name=name, dataset="digits", subsample=200, validation_split=0.2, model_args={"hidden": (8,)},
                 batch_size=64, max_epochs=1, early_stopping=None, configs=configs, results=results)


BOOKKEEPING_SCRIPT = r"""
import json, re, sys, time
import ray
from benchmarks.inside import bookkeeping_sweep
from lrsweep.run.driver import launch

ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
out = {}
# "warm-up" pays the driver's one-time costs (imports, Tune's first start) outside the figures
for label, trials in (("warm-up", 2), ("few", int(sys.argv[1])), ("many", int(sys.argv[2]))):
    sweep = bookkeeping_sweep(f"bookkeeping-{label}", trials, sys.argv[3])
    lines = []
    cpu, wall = time.process_time(), time.perf_counter()
    launch(sweep, print_fn=lines.append)
    stored = next(re.search(r"in (\d+) files \(([\d.]+) s writing\)", l) for l in lines if "s writing" in l)
    out[label] = {"trials": trials, "driver_cpu": time.process_time() - cpu, "seconds": time.perf_counter() - wall,
                  "files": int(stored.group(1)), "write_seconds": float(stored.group(2))}
ray.shutdown()
print(json.dumps(out))
"""


def bookkeeping(folder, trials=500, quick=False):
    """Driver CPU per trial: the difference between a sweep of `trials` one-epoch trials and
    one of 50, over the difference in trials (fixed costs cancel); and how long a trial
    slot sits idle between two trials in the large sweep (Tune's hand-over)."""
    few, many = (10, 40) if quick else (50, trials)
    results = os.path.join(folder, "results", "bookkeeping")
    subprocess.run(["rm", "-rf", results], check=True)
    out, samples = _sampled([sys.executable, "-c", BOOKKEEPING_SCRIPT, str(few), str(many), results],
                            _trial_workers, 1.0, 3600)
    runs = json.loads(out.strip().splitlines()[-1])
    import pandas as pd

    trials_table = pd.read_parquet(os.path.join(results, "trials"))
    big = trials_table[trials_table["sweep"].str.startswith("bookkeeping-many")].sort_values("start_time")
    return {"trials": many, "seconds": runs["many"]["seconds"],
            "driver_ms_per_trial": 1000 * (runs["many"]["driver_cpu"] - runs["few"]["driver_cpu"]) / (many - few),
            "idle_ms_per_trial": 1000 * _slot_gaps(big).mean(),
            "store_files": runs["many"]["files"], "store_write_seconds": runs["many"]["write_seconds"],
            **{f"{kind}_kb_per_trial": _worker_growth(samples, big, kind) for kind in WORKER_TITLES}}


# The processes of the trials, by their titles: the trainers that train them (they outlive
# a launch on a running cluster) and Tune's actors that report for them (they end with it).
WORKER_TITLES = {"trainers": "ray::Trainer", "tune_actors": "ImplicitFunc"}


def _trial_workers(root_pid):
    """Of each process of the trials under `root_pid` (the Ray it started): its kind (a key
    of WORKER_TITLES) and its resident MB."""
    found = {}
    for pid in _tree(root_pid):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                command = f.read()
            kind = next((kind for kind, title in WORKER_TITLES.items() if title in command), None)
            if kind is None:
                continue
            with open(f"/proc/{pid}/statm") as f:
                found[pid] = kind, int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            pass
    return found


def _process_cpu(pid):
    """CPU seconds (user and system, all threads) that process `pid` has used, or None once it
    has ended; /proc counts in clock ticks (10 ms here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_growth(samples, trials, kind):
    """How much the trial workers of `kind` (a key of WORKER_TITLES) of the large sweep grow
    per trial they train: from their sample a fifth into the sweep (past the first trials'
    one-time growth) to their last, over the trials that ended in between."""
    samples = [(t, {pid: mb for pid, (k, mb) in workers.items() if k == kind}) for t, workers in samples]
    pids = next((set(w) for _, w in reversed(samples) if w), set())  # the large sweep's workers, the last seen
    seen = [(t, w) for t, w in samples if pids and pids <= set(w)]
    if len(seen) < 5:
        return None
    (t0, first), (t1, last) = seen[len(seen) // 5], seen[-1]
    ended = trials["end_time"].astype("int64") / 1e6
    between = int(((ended > t0) & (ended <= t1)).sum())
    return 1024 * sum(last[pid] - first[pid] for pid in pids) / between if between else None


def _slot_gaps(trials, slots=2):
    """Seconds from a trial's end to the start of the next trial on the slot it freed."""
    free, gaps = [None] * slots, []
    for start, end in zip(trials["start_time"], trials["end_time"]):
        i = min(range(slots), key=lambda k: free[k] or start)  # the slot free the longest
        if free[i] is not None:
            gaps.append((start - free[i]).total_seconds())
        free[i] = end
    return np.array(gaps)


if __name__ == "__main__":
    folder = "/tmp/lrsweep-bench"
    os.makedirs(folder, exist_ok=True)
    which = sys.argv[1]
    print(json.dumps({"overhead": overhead, "memory": memory, "bookkeeping": bookkeeping}[which](
        folder, quick="--quick" in sys.argv), indent=1))
