"""What the limit and the peers share: one runner = one fresh Python process, timed from outside.

A runner's function (in `benchmarks.limit` or `benchmarks.peers`) calls `time_child`, which
writes the workload and settings to a JSON spec file, starts

    python -c "from benchmarks.<module> import _child; _child('<spec.json>')"

in the repository root, and takes the wall time around that subprocess: Python's,
TensorFlow's and (for the Ray runners) Ray's start-up all count, as when a user runs the
command. The child writes what it measured inside to a JSON result file; its stdout and
stderr go to a log beside it (TensorFlow and Ray are chatty), shown only when it fails.

Also here: `quick` (the tiny variant of a workload used while developing) and `main`, the
command line both modules share:

    python -m benchmarks.peers optuna_threads small --quick [--workers 2] [--folder DIR]
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FOLDER = os.path.join(tempfile.gettempdir(), "lrsweep-bench")

# No usage reports from the Ray the runners start; TensorFlow's C++ INFO lines off.
CHILD_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def quick(workload):
    """The same workload cut to 2 configs and 2 epochs: for checking the code, not for timing."""
    return dataclasses.replace(workload, name=f"{workload.name}-quick", epochs=2,
                               configs=list(workload.configs[:2]))


def workload_from_dict(fields):
    from benchmarks.workloads import Workload

    return Workload(**{**fields, "hidden": tuple(fields["hidden"])})


def time_child(module, runner, workload, folder, workers, **options):
    """(wall seconds, the child's result dict) of `runner` run in a fresh Python process.

    The child is `benchmarks.<module>._child(spec_path)`; it finds in the spec the runner's
    name, the workload's fields, `folder`, `workers` and any `options`, and writes its
    figures to `spec["result"]`.
    """
    work = os.path.join(os.path.abspath(folder), "runs", f"{runner}-{workload.name}")
    os.makedirs(work, exist_ok=True)
    spec = {"runner": runner, "workload": dataclasses.asdict(workload), "folder": os.path.abspath(folder),
            "work": work, "workers": workers, "result": os.path.join(work, "result.json"), **options}
    spec_path = os.path.join(work, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    if os.path.exists(spec["result"]):
        os.remove(spec["result"])
    env = {**os.environ, **CHILD_ENV,
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    code = f"from benchmarks.{module} import _child; _child({spec_path!r})"
    log_path = os.path.join(work, "output.log")
    with open(log_path, "w") as log:
        started = time.time()
        returncode = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.time() - started
    if returncode != 0 or not os.path.exists(spec["result"]):
        with open(log_path) as log:
            tail = log.read()[-4000:]
        raise RuntimeError(f"{module}.{runner} on {workload.name} exited with {returncode}; "
                           f"end of {log_path}:\n{tail}")
    with open(spec["result"]) as f:
        return seconds, json.load(f)


def read_spec(spec_path):
    """(spec dict, Workload) in a child."""
    with open(spec_path) as f:
        spec = json.load(f)
    return spec, workload_from_dict(spec["workload"])


def write_result(spec, result):
    with open(spec["result"], "w") as f:
        json.dump(result, f)


def main(runners, argv=None):
    """Run one runner of `runners` ({name: function}) and print its figures as JSON."""
    from benchmarks.workloads import workloads

    parser = argparse.ArgumentParser(description="Run one benchmark runner and print its figures as JSON.")
    parser.add_argument("runner", choices=sorted(runners))
    parser.add_argument("workload", choices=["small", "medium"])
    parser.add_argument("--quick", action="store_true", help="2 configs, 2 epochs: to check the code")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folder", default=DEFAULT_FOLDER, help=f"work folder (default {DEFAULT_FOLDER})")
    args = parser.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    workload = workloads(args.folder)[args.workload]
    result = runners[args.runner](workload, args.folder, workers=args.workers, quick=args.quick)
    print(json.dumps(result, indent=2))
