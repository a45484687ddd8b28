"""Where the driver's CPU goes per trial: cProfile around `driver.launch` of N one-epoch
trials of the bookkeeping model (after a 2-trial warm-up that starts Ray and the workers).

    python -m benchmarks.profile_driver [--trials 150] [--top 40] [--results DIR]

Prints the driver's CPU and wall time (inflated by the profiler) and the functions with
the most cumulative time; `--out F` keeps the profile for `pstats`.
"""

import argparse
import cProfile
import os
import pstats
import tempfile
import time

from benchmarks.inside import bookkeeping_sweep

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--results", default=None, help="a results folder (default: a temporary one)")
    parser.add_argument("--out", default=None, help="write the profile here")
    args = parser.parse_args()
    from lrsweep.run.driver import launch, stop_ray

    results = args.results or tempfile.mkdtemp(prefix="lrsweep-profile-")
    launch(bookkeeping_sweep("warm-up", 2, results), print_fn=lambda line: None)
    profile = cProfile.Profile()
    cpu, wall = time.process_time(), time.perf_counter()
    profile.enable()
    launch(bookkeeping_sweep("profiled", args.trials, results), print_fn=lambda line: None)
    profile.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop_ray()
    print(f"{args.trials} trials: driver CPU {cpu:.2f} s ({cpu / args.trials * 1e3:.1f} ms per trial, profiled), "
          f"wall {wall:.1f} s; results in {results}")
    if args.out:
        profile.dump_stats(args.out)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
