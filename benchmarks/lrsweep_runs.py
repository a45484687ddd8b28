"""lrsweep itself on a workload, timed as a user runs it.

    cold   `python -m lrsweep launch SWEEP.py`: the command starts its own Ray
    warm   `ray start --head` once, then `python -m lrsweep launch SWEEP.py --address auto`
           (the service case: many sweeps on one running cluster; the head is started,
           and an earlier sweep run, before the clock starts)

Each returns the whole command's wall time, measured around the subprocess, and the trial
phase: first trial start to last trial end, from the timestamps in the results store.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd

from benchmarks.harness import CHILD_ENV, ROOT

ENV = {**os.environ, **CHILD_ENV, "PYTHONPATH": ROOT}


def lrsweep_command(*args, env=None, timeout=3600):
    """(wall seconds, CompletedProcess) of `python -m lrsweep ARGS`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lrsweep", *args], cwd=ROOT, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"lrsweep {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done


def trial_phase(results):
    """Figures from the store of one run: the trial phase, trials, epochs, epoch seconds."""
    trials = pd.read_parquet(os.path.join(results, "trials"))
    epochs = pd.read_parquet(os.path.join(results, "epochs"))
    return {"trial_phase": (trials["end_time"].max() - trials["start_time"].min()).total_seconds(),
            "trials": len(trials), "epochs": len(epochs), "trial_seconds": float(trials["wall_seconds"].sum()),
            "best_val_accuracy": float(trials["final_val_accuracy"].max()),
            "first_start": trials["start_time"].min().timestamp()}


def _results(folder, label):
    results = os.path.join(folder, "results", label)
    shutil.rmtree(results, ignore_errors=True)
    return results


def launch_cold(workload, folder, workers=2):
    """The whole command with no Ray running: it starts (and stops) its own."""
    results = _results(folder, f"{workload.name}-cold")
    seconds, _ = lrsweep_command("launch", workload.sweep_file(folder), "--results", results)
    return {"seconds": seconds, **trial_phase(results)}


class RunningRay:
    """A local Ray head started with `ray start --head --block`, as a service runs one, in a
    process group of its own that is killed on exit (so no other Ray on the machine is touched)."""

    PORT = 6390

    def __init__(self, cpus):
        self.cpus, self.address = cpus, f"127.0.0.1:{self.PORT}"

    def __enter__(self):
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        # no drain on SIGTERM: it waits up to 30 s for the trainers, idle detached actors, to end
        env = {**ENV, "RAY_AUTH_MODE": "token", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        if not os.path.exists(os.path.expanduser("~/.ray/auth_token")):  # needed for `ray start --head`
            subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
        self.head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={self.PORT}",
                                      f"--num-cpus={self.cpus}", "--dashboard-host=127.0.0.1"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 120
        while subprocess.run([ray, "status", f"--address={self.address}"], env=env,
                             capture_output=True).returncode != 0:
            if time.time() > deadline or self.head.poll() is not None:
                raise RuntimeError("ray start --head did not come up")
            time.sleep(1)
        return self

    def __exit__(self, *exc):
        # SIGTERM to `ray start` alone: it stops its processes in turn within seconds, where
        # SIGTERM to the whole group took 33 s (its drain waited out its timeout)
        os.kill(self.head.pid, signal.SIGTERM)
        try:
            self.head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.head.pid, signal.SIGKILL)  # whatever of it is left
        except ProcessLookupError:
            pass
        self.head.wait()


def launch_warm(workload, folder, workers=2):
    """The whole command joining a Ray that is already running (`--address auto`), where an
    earlier sweep has run (the same trials for one epoch, not timed), as on a cluster that
    serves many sweeps."""
    results = _results(folder, f"{workload.name}-warm")
    with RunningRay(workers) as ray:
        joining = ["--address", ray.address]
        lrsweep_command("launch", workload.sweep_file(folder), "--results", _results(folder, "earlier-sweep"),
                        "--max-epochs", "1", *joining, env={"RAY_AUTH_MODE": "token"})
        seconds, _ = lrsweep_command("launch", workload.sweep_file(folder), "--results", results, *joining,
                                     env={"RAY_AUTH_MODE": "token"})
    return {"seconds": seconds, **trial_phase(results)}


if __name__ == "__main__":
    from benchmarks.workloads import workloads

    how, name = sys.argv[1], sys.argv[2]
    folder = "/tmp/lrsweep-bench"
    os.makedirs(folder, exist_ok=True)
    print(json.dumps({"cold": launch_cold, "warm": launch_warm}[how](workloads(folder)[name], folder)))
