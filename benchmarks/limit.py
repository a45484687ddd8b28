"""The reachable limit of a sweep on this machine: `workers` warm one-thread processes that
train the workload's trials at once, with nothing between them and Keras.

What is measured: one fresh Python process (started and timed by `harness.time_child`)
spawns `workers` processes with multiprocessing's "spawn" start method. Each one sets
TensorFlow to one intra-op and one inter-op thread before any op, imports Keras, loads the
workload's arrays and waits at a `multiprocessing.Barrier`. Past the barrier, process r
trains trials r, r + workers, r + 2 * workers, ... one after another in a plain Keras loop
(`keras.backend.clear_session()`, `plain_trial`, `model.fit`), and sends back its
`time.time()` stamps.

    seconds            from the first process past the barrier to the last one's end: the limit
    command_seconds    the whole command, start-up and loading included (for reference)
    process_seconds    each process's time from the barrier to its end
    process_fit_seconds  each process's sum of `model.fit` times
    trials             per trial: its process, seconds (build + fit), fit seconds, final val_accuracy
    best_val_accuracy  the best final val_accuracy: the work was done

    python -m benchmarks.limit limit small --quick
"""

import time

from benchmarks import harness

# A process that dies while loading would leave the others at the barrier for good.
BARRIER_TIMEOUT = 600


def limit(workload, folder, workers=2, quick=False):
    """The limit's figures for `workload` with `workers` processes (see the module docstring)."""
    if quick:
        workload = harness.quick(workload)
    seconds, result = harness.time_child("limit", "limit", workload, folder, workers)
    return {"seconds": result.pop("seconds"), "command_seconds": seconds, **result}


def _child(spec_path):
    import multiprocessing
    import queue as queues

    spec, workload = harness.read_spec(spec_path)
    workers = spec["workers"]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    reports = context.Queue()
    processes = [context.Process(target=_worker, args=(rank, workers, spec["workload"], barrier, reports))
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
    })


def _worker(rank, workers, workload_fields, barrier, reports):
    """One warm one-thread process: its share of the trials, past the barrier."""
    import tensorflow as tf

    # Before any op, or TensorFlow has already sized its thread pools.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from benchmarks.workloads import plain_trial

    workload = harness.workload_from_dict(workload_fields)
    data = workload.load()

    barrier.wait(timeout=BARRIER_TIMEOUT)
    start = time.time()
    trials = []
    for index in range(rank, len(workload.configs), workers):
        began = time.time()
        keras.backend.clear_session()
        model, fit = plain_trial(workload, data, workload.configs[index])
        fit_began = time.time()
        history = model.fit(**fit)
        ended = time.time()
        trials.append({"config": index, "process": rank, "seconds": ended - began,
                       "fit_seconds": ended - fit_began,
                       "val_accuracy": float(history.history["val_accuracy"][-1])})
    reports.put({"rank": rank, "start": start, "end": time.time(), "trials": trials})


if __name__ == "__main__":
    harness.main({"limit": limit})
