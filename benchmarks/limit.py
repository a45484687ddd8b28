"""The reachable limit of a sweep on this machine: `workers` warm one-thread processes that
train the workload's trials at once, with nothing between them and Keras.

Two kinds of training step (`step`):

    plain    what a user writes by hand (`plain_trial`: `model.fit` of the arrays, Keras' own
             schedule): the limit issue 9 defines. lrsweep's trials beat it, as they train
             faster steps (one compiled call per epoch, input pipelines started once).
    lrsweep  the trials exactly as lrsweep's trainers train them (`trial.build_trial`: the
             same model, rate table, compiled call and input pipelines, a compiled model
             kept between trials, `trial.warm_up(1)`), only lrsweep's reporting and
             everything around the trials (Ray, Tune, the store) missing: the yardstick of
             how much time lrsweep's running of the trials wastes, as the same work
             cannot be done faster in these processes.

What is measured: one fresh Python process (started and timed by `harness.time_child`)
spawns `workers` processes with multiprocessing's "spawn" start method. Each one sets
TensorFlow to one intra-op and one inter-op thread before any op, imports Keras, loads the
workload's arrays (plain: `workload.load`; lrsweep: the sweep file's data, as a launch
reads it) and waits at a `multiprocessing.Barrier`. Past the barrier, process r trains
trials r, r + workers, r + 2 * workers, ... one after another in a plain Keras loop (plain:
`keras.backend.clear_session()`, `plain_trial`, `model.fit`; lrsweep: `build_trial`,
`model.fit`), and sends back its `time.time()` stamps.

    seconds            from the first process past the barrier to the last one's end: the limit
    command_seconds    the whole command, start-up and loading included (for reference)
    process_seconds    each process's time from the barrier to its end
    process_fit_seconds  each process's sum of `model.fit` times
    trials             per trial: its process, seconds (build + fit), fit seconds, final val_accuracy
    best_val_accuracy  the best final val_accuracy: the work was done

    python -m benchmarks.limit limit small --quick
    python -m benchmarks.limit limit_same_step small --quick
"""

import time

from benchmarks import harness

# A process that dies while loading would leave the others at the barrier for good.
BARRIER_TIMEOUT = 600


def limit(workload, folder, workers=2, quick=False, step="plain"):
    """The limit's figures for `workload` with `workers` processes training `step`'s way (see
    the module docstring)."""
    if quick:
        workload = harness.quick(workload)
    runner = "limit" if step == "plain" else f"limit_{step}_step"
    sweep_path = workload.sweep_file(folder, name=f"{workload.name}-limit") if step == "lrsweep" else None
    seconds, result = harness.time_child("limit", runner, workload, folder, workers, step=step,
                                         sweep_path=sweep_path)
    return {"seconds": result.pop("seconds"), "command_seconds": seconds, **result}


def limit_same_step(workload, folder, workers=2, quick=False):
    """The limit on lrsweep's own training step."""
    return limit(workload, folder, workers, quick, step="lrsweep")


def _child(spec_path):
    import multiprocessing
    import queue as queues

    spec, workload = harness.read_spec(spec_path)
    workers = spec["workers"]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    reports = context.Queue()
    processes = [context.Process(target=_worker, args=(rank, workers, spec["workload"], barrier, reports,
                                                       spec.get("step", "plain"), spec.get("sweep_path")))
                 for rank in range(workers)]
    for process in processes:
        process.start()
    received = []
    while len(received) < workers:
        try:
            received.append(reports.get(timeout=1))
        except queues.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a limit process exited with {failed[0]}")
    for process in processes:
        process.join()

    received.sort(key=lambda report: report["rank"])
    trials = sorted((trial for report in received for trial in report["trials"]), key=lambda t: t["config"])
    harness.write_result(spec, {
        "seconds": max(r["end"] for r in received) - min(r["start"] for r in received),
        "process_seconds": [r["end"] - r["start"] for r in received],
        "process_fit_seconds": [sum(t["fit_seconds"] for t in r["trials"]) for r in received],
        "trials": trials,
        "best_val_accuracy": max(t["val_accuracy"] for t in trials),
        "workers": workers,
        "step": spec.get("step", "plain"),
    })


def _worker(rank, workers, workload_fields, barrier, reports, step="plain", sweep_path=None):
    """One warm one-thread process: its share of the trials, past the barrier."""
    workload = harness.workload_from_dict(workload_fields)
    trials_of = _plain_trials(workload) if step == "plain" else _lrsweep_trials(sweep_path)

    barrier.wait(timeout=BARRIER_TIMEOUT)
    start = time.time()
    trials = []
    for index in range(rank, len(workload.configs), workers):
        began = time.time()
        with trials_of(index) as (model, fit):
            fit_began = time.time()
            history = model.fit(**fit)
        ended = time.time()
        trials.append({"config": index, "process": rank, "seconds": ended - began,
                       "fit_seconds": ended - fit_began,
                       "val_accuracy": float(history.history["val_accuracy"][-1])})
    reports.put({"rank": rank, "start": start, "end": time.time(), "trials": trials})


def _plain_trials(workload):
    """trials_of(index): a context giving (model, fit arguments) of the workload's trial
    `index`, trained by hand (`plain_trial`), after one-thread TensorFlow and the data."""
    import contextlib

    import tensorflow as tf

    # Before any op, or TensorFlow has already sized its thread pools.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from benchmarks.workloads import plain_trial

    data = workload.load()

    @contextlib.contextmanager
    def trials_of(index):
        keras.backend.clear_session()
        yield plain_trial(workload, data, workload.configs[index])

    return trials_of


def _lrsweep_trials(sweep_path):
    """trials_of(index) as `_plain_trials`, of the trials as lrsweep's trainers build them from
    the workload's sweep file, after a trainer's warm-up and the sweep's data."""
    import contextlib

    from lrsweep.run import trial
    from lrsweep.run.driver import sweep_data, training_setup, trial_arrays
    from lrsweep.sweep.space import trial_config
    from lrsweep.sweep.spec import load_sweep

    trial.warm_up(1)
    sweep = load_sweep(sweep_path)
    setup, arrays = training_setup(sweep), trial_arrays(sweep_data(sweep))
    configs = [trial_config(arm, arm.space) for arm in sweep.fixed_configs]
    kept = {}  # as a trainer keeps its compiled models between trials

    @contextlib.contextmanager
    def trials_of(index):
        model, fit, _ = trial.build_trial(configs[index], arrays, setup, kept=kept)
        try:
            yield model, fit
        finally:
            trial.release_readers()

    return trials_of


if __name__ == "__main__":
    harness.main({"limit": limit, "limit_same_step": limit_same_step})
