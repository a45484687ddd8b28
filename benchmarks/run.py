"""Every lrsweep benchmark, measured side by side in one run, printed with its ratios.

    python -m benchmarks.run                     # everything but time-to-target (about 50 min here)
    python -m benchmarks.run --to-target         # also the search comparison (about 2 h: 5 seeds, 2 datasets)
    python -m benchmarks.run --only store,memory # some sections again, the others kept from the last run
    python -m benchmarks.run --quick             # tiny settings: checks the code, not the machine

Run it on an otherwise idle machine: two cores shared with anything else make every figure
noise. Ratios carry over between machines; seconds do not. The figures are also written as
JSON to benchmarks/last-run.json (or --out).
"""

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile

from benchmarks import harness, inside, limit, lrsweep_runs, peers, store_speed, to_target
from benchmarks.workloads import workloads

SECTIONS = ("efficiency", "peers", "overhead", "memory", "bookkeeping", "store")
PEERS = {"small": list(peers.RUNNERS), "medium": ["plain_loop", "optuna_threads", "ray_tune_reuse"]}
# Runs of each runner: the VM's speed drifts by 10-20% between minutes, so one run of each is
# noise; the efficiency ratios are medians of each round's ratios (`round_ratios`). Medium's
# peers run once (each takes minutes, and they are 2-4x lrsweep's time, far beyond the noise).
REPEATS = {"small": 3, "medium": 3}
PEER_REPEATS = {"small": 3, "medium": 1}


def median_run(runs):
    """The run with the median `seconds`, with every run's seconds beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "all_seconds": [r["seconds"] for r in runs]}


def efficiency(folder, quick):
    out = {}
    for name, workload in workloads(folder).items():
        w = harness.quick(workload) if quick else workload
        runners = {"limit": lambda: limit.limit(workload, folder, quick=quick),
                   "limit_same_step": lambda: limit.limit_same_step(workload, folder, quick=quick),
                   "cold": lambda: lrsweep_runs.launch_cold(w, folder),
                   "warm": lambda: lrsweep_runs.launch_warm(w, folder)}
        # round by round, so that the VM's drift reaches every runner alike
        rounds = [{kind: run() for kind, run in runners.items()} for _ in range(1 if quick else REPEATS[name])]
        out[name] = {kind: median_run([r[kind] for r in rounds]) for kind in runners}
        out[name]["rounds"] = [{kind: {k: r[kind][k] for k in ("seconds", "trial_phase") if k in r[kind]}
                                for kind in runners} for r in rounds]
    return out


# Each ratio: (limit's figure, lrsweep's run, lrsweep's figure) of one round.
RATIOS = {"trial phase": ("cold", "trial_phase"), "trial phase, Ray running": ("warm", "trial_phase"),
          "Ray running": ("warm", "seconds"), "cold": ("cold", "seconds")}


def round_ratios(figures, limit_kind):
    """{ratio name: [limit seconds / lrsweep's figure, of each round]} of one workload's
    efficiency figures: each round's runs ran minutes apart, so their ratio is fair where the
    VM's speed drifts between rounds. None for a last-run.json of before 2026-12-07 (no rounds)."""
    rounds = figures.get("rounds")
    if not rounds or limit_kind not in rounds[0]:
        return None
    return {name: [r[limit_kind]["seconds"] / r[run][figure] for r in rounds] for name, (run, figure) in RATIOS.items()}


def run_peers(folder, quick):
    return {name: {peer: median_run([peers.RUNNERS[peer](workload, folder, quick=quick)
                                     for _ in range(1 if quick else PEER_REPEATS[name])])
                   for peer in PEERS[name]}
            for name, workload in workloads(folder).items()}


def _kb(value):
    return "not measured" if value is None else f"{value:.0f} KB"


def print_report(figures):
    eff, peer = figures.get("efficiency"), figures.get("peers")
    if eff:
        print("\n## Efficiency against the reachable limit (limit seconds / lrsweep seconds; against the limit on "
              "lrsweep's own step, 1.0 = no waste)")
        print("(seconds: the run whose whole command took the median time; each ratio the median of the "
              "rounds' ratios: the runners run one after another in each round; the limit trains by hand, "
              "with a plain fit of the arrays, or with lrsweep's own training step, which shows what lrsweep's "
              "running of trials wastes)")
        print("| workload | limit's step | limit | lrsweep trial phase | whole command, Ray running | "
              "whole command, cold |")
        print("|---|---|---|---|---|---|")
        rounds = []
        for name, f in eff.items():
            for kind, label in (("limit", "plain fit"), ("limit_same_step", "lrsweep's")):
                if kind not in f:  # a last-run.json of before 2026-12-07 has the plain one only
                    continue
                lim, by_round = f[kind]["seconds"], round_ratios(f, kind)

                def cell(name_of, seconds):
                    ratio = statistics.median(by_round[name_of]) if by_round else lim / seconds
                    return f"{seconds:.1f} s ({ratio:.2f})"

                print(f"| {name} | {label} | {lim:.1f} s | {cell('trial phase', f['cold']['trial_phase'])} "
                      f"| {cell('Ray running', f['warm']['seconds'])} | {cell('cold', f['cold']['seconds'])} |")
                if by_round:
                    rounds.append(f"{name}, {label}: " + "; ".join(
                        f"{ratio_name} {', '.join(f'{r:.2f}' for r in values)}"
                        for ratio_name, values in by_round.items()))
        if rounds:
            print("\nRound by round (limit / lrsweep):")
            for line in rounds:
                print(f"- {line}")
    if peer:
        print("\n## Against the peers (same 8 trials; peer seconds / lrsweep seconds, >1 = lrsweep faster)")
        print("| workload | peer | seconds | vs lrsweep cold | vs lrsweep, Ray running |")
        print("|---|---|---|---|---|")
        for name, runs in peer.items():
            cold = eff[name]["cold"]["seconds"] if eff else None
            warm = eff[name]["warm"]["seconds"] if eff else None
            for runner, f in runs.items():
                ratios = (f"{f['seconds'] / cold:.2f} | {f['seconds'] / warm:.2f}" if eff else "- | -")
                print(f"| {name} | {runner} | {f['seconds']:.1f} | {ratios} |")
    if "overhead" in figures:
        f = figures["overhead"]
        def by_round(rounds):  # each round's paired ratio, and their median
            return (f"; round by round (median {100 * statistics.median(rounds):+.1f}%) "
                    f"{', '.join(f'{100 * r:+.1f}%' for r in rounds)}") if rounds else ""

        print(f"\n## Per-epoch overhead: lrsweep {f['lrsweep'] * 1000:.1f} ms per epoch; a plain model.fit of "
              f"the arrays {f['plain'] * 1000:.1f} ms ({100 * f['overhead']:+.1f}%); the same trial's model.fit "
              f"without lrsweep's reporting {f['plain_same_pipeline'] * 1000:.1f} ms "
              f"({100 * f['reporting_overhead']:+.1f}%: reporting, history, rate logging"
              f"{by_round(f.get('reporting_rounds', []))})")  # no rounds in a last-run.json of before 2026-12-03
        if "cpu" in f:  # absent from a last-run.json of before 2026-12-03 afternoon
            cpu = f["cpu"]
            print(f"   CPU per epoch (all the process's threads): lrsweep {cpu['lrsweep'] * 1000:.1f} ms, the plain fit "
                  f"{cpu['plain'] * 1000:.1f} ms, the same trial's fit {cpu['plain_same_pipeline'] * 1000:.1f} ms "
                  f"({100 * f['cpu_reporting_overhead']:+.1f}%{by_round(f['cpu_reporting_rounds'])}); "
                  f"lrsweep's callback itself {f['callback'] * 1000:.2f} ms per epoch")
    if "memory" in figures:
        f = figures["memory"]
        print(f"\n## Memory (whole process tree, PSS): tiny dataset {f['peak_tiny'] / 2**30:.2f} GiB, "
              f"{f['dataset_large'] / 2**20:.0f} MB dataset {f['peak_large'] / 2**30:.2f} GiB: "
              f"{f['extra_per_dataset']:.2f}x the dataset at the peak (load and put), "
              f"{f['trial_extra_per_dataset']:.2f}x while 2 trials train")
    if "bookkeeping" in figures:
        f = figures["bookkeeping"]
        print(f"\n## Bookkeeping: {f['trials']} one-epoch trials in {f['seconds']:.1f} s; the driver's CPU: "
              f"{f['driver_ms_per_trial']:.1f} ms per trial; a trial slot sits idle {f['idle_ms_per_trial']:.0f} ms "
              f"between two trials; the store took {f['store_write_seconds']:.2f} s to write {f['store_files']} files; "
              f"memory grows per trial: the trainers {_kb(f.get('trainers_kb_per_trial'))}, Tune's actors "
              f"{_kb(f.get('tune_actors_kb_per_trial'))}")
    if "store" in figures:
        f = figures["store"]
        print(f"\n## Query speed, whole command: rank {f['rank_tiny']:.2f} s (10 trials) vs {f['rank_large']:.2f} s "
              f"({f['rows_large']:,} epoch rows): {f['rank_ratio']:.2f}x; query {f['query_tiny']:.2f} s vs "
              f"{f['query_large']:.2f} s: {f['query_ratio']:.2f}x")
    if "to_target" in figures:
        print("\n## Time to a good schedule (medians over seeds; seconds: a run that never got there counts as the "
              "budget; epochs: the median of the runs that got there)")
        for dataset, f in figures["to_target"].items():
            print(f"\n{dataset}: hard target {f['hard']:.4f}, easy {f['easy']:.4f}")
            spread = f.get("seed_spread")
            if spread:
                print(f"luck: the long search's best schedule, {spread['config']}, trained again with seeds "
                      f"{spread['seeds'][0]}-{spread['seeds'][-1]}: best validation accuracy "
                      f"{min(spread['best']):.4f} to {max(spread['best']):.4f}")
            print("| tool | seed | easy s | easy epochs | hard s | hard epochs | best at 30 s | 60 s | 120 s |")
            print("|---|---|---|---|---|---|---|---|---|")
            def shown(value, digits):
                return "-" if value is None else f"{value:.{digits}f}"

            for tool, runs in f["runs"].items():
                for r in runs:
                    print(f"| {tool} | {r['seed']} | {shown(r['easy_seconds'], 1)} | {shown(r['easy_epochs'], 0)} | "
                          f"{shown(r['hard_seconds'], 1)} | {shown(r['hard_epochs'], 0)} | "
                          + " | ".join(shown(r[f"best_at_{m}"], 4) for m in to_target.MARKS) + " |")
                budget = f.get("budget", 300)
                marks = " | ".join(shown(to_target.medians(runs, f"best_at_{m}", 0.0), 4) if m <= budget else "-"
                                   for m in to_target.MARKS)
                print(f"| {tool} | median | {to_target.medians(runs, 'easy_seconds', budget):.1f} | "
                      f"{shown(to_target.median_or_none(runs, 'easy_epochs'), 0)} | "
                      f"{to_target.medians(runs, 'hard_seconds', budget):.1f} | "
                      f"{shown(to_target.median_or_none(runs, 'hard_epochs'), 0)} | {marks} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}, to_target")
    parser.add_argument("--to-target", action="store_true", help="also the (long) time-to-target comparison")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check the code")
    parser.add_argument("--seeds", type=int, default=5, help="time-to-target: seeds per tool and dataset")
    parser.add_argument("--budget", type=float, default=300, help="time-to-target: seconds a search may take")
    parser.add_argument("--long", type=float, default=600, help="time-to-target: seconds of the search that "
                                                                     "finds the best reachable accuracy")
    parser.add_argument("--ray-running", action="store_true",
                        help="time-to-target: also lrsweep joining a Ray started before its command")
    parser.add_argument("--datasets", default=",".join(to_target.DATASETS),
                        help="time-to-target: comma-separated datasets (the others keep their figures)")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "lrsweep-bench"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "last-run.json"))
    args = parser.parse_args()
    sections = args.only.split(",") if args.only else list(SECTIONS) + (["to_target"] if args.to_target else [])
    os.makedirs(args.folder, exist_ok=True)
    figures = {}
    if args.only and os.path.exists(args.out):  # one section again: keep the others' figures
        with open(args.out) as f:
            figures = json.load(f)
    figures.update({"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
                    "date": dt.date.today().isoformat(), "quick": args.quick})
    runs = {"efficiency": lambda: efficiency(args.folder, args.quick),
            "peers": lambda: run_peers(args.folder, args.quick),
            "overhead": lambda: inside.overhead(args.folder, quick=args.quick),
            "memory": lambda: inside.memory(args.folder, quick=args.quick),
            "bookkeeping": lambda: inside.bookkeeping(args.folder, quick=args.quick),
            "store": lambda: store_speed.store_speed(args.folder, quick=args.quick),
            "to_target": lambda: {**figures.get("to_target", {}), **to_target.to_target(
                args.folder, seeds=tuple(range(1, args.seeds + 1)), budget=args.budget, long=args.long,
                quick=args.quick, datasets=args.datasets.split(","), ray_running=args.ray_running)}}
    for section in sections:
        print(f"running {section} ...", flush=True)
        figures[section] = runs[section]()
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1, default=str)
    print_report(figures)


if __name__ == "__main__":
    main()
