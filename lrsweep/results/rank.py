"""The ranking of (optimizer, schedule family) rows per dataset: plain functions over the
`trials` table."""

import json
import math

import numpy as np
import pandas as pd

from lrsweep.errors import LrsweepError, warn
from lrsweep.results.store import LOGS, data_file

TOP = 3


def metric_column(trials, metric=None):
    """(column, mode) the ranking orders by: `final_<metric>` of each trial by default, the
    sweep's own metric when none is named (the most common one, with a warning, where a
    dataset's sweeps differ); `best_...`/`final_...` columns as named."""
    if metric is None:
        counts = trials["metric"].value_counts().sort_index()  # of equals, idxmax takes the first by name
        metric = counts.idxmax() if len(counts) else "val_accuracy"
        if len(counts) > 1:
            datasets = ", ".join(sorted(trials["dataset"].astype(str).unique()))
            warn(f"the sweeps of dataset {datasets} optimise different metrics (trials: "
                 f"{', '.join(f'{name} {n}' for name, n in counts.items())}): ranked by {metric}, the most "
                 f"common (of equals, the first by name; `lrsweep rank --metric M` ranks by another)")
    return ranked_column(metric)


def ranked_column(metric):
    """(column, mode) of a metric named (`rank --metric`): `final_<metric>`, or the
    `best_...`/`final_...` column named; LrsweepError for another name."""
    column = metric if metric.startswith(("best_", "final_")) else f"final_{metric}"
    if column.split("_", 1)[1] not in LOGS:
        valid = ", ".join(LOGS)
        raise LrsweepError(f"Argument `metric` must be one of {valid} (or best_/final_ of one). Received: metric={metric!r}")
    return column, "min" if column.endswith("loss") else "max"


def _params_text(row):
    params = json.loads(row["params"]) if isinstance(row["params"], str) else {}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def _at_largest_budget(trials):
    """early_stopping="budget" trains a promoted configuration again at each rung: it
    counts as its longest run (a short rung's metric is not the configuration's). Trials of
    one configuration at the same budget that ended otherwise (not `_without_copies`) are
    trials of their own, each counted."""
    if "budget" not in trials or trials["budget"].isna().all():
        return trials
    same = trials.groupby(["dataset", "sweep", "label", "params", "seed"], observed=True, dropna=False)["budget"]
    return trials[trials["budget"].isna() | (trials["budget"] >= same.transform("max"))]


def _without_copies(trials, column):
    """The trials, each training once: a trial that repeats another's exactly (the same
    settings, configuration, seed, stage and budget, and the same end: epochs, status and
    ranked value) is a copy of it, as a second launch of a sweep file with the same seed
    trains its first trials and its confirmation runs again, or a `configs` list naming one
    twice. Pooled, copies would count as more evidence; those of the sweep that began first
    are kept (all of one sweep: its runs pair by seed). The settings compared are those that
    decide the training (`_training`). Trials stored before their settings were
    (`training_settings`) are each counted."""
    if "training_settings" not in trials:
        return trials
    key = ["training", *(name for name in ("dataset", "label", "params", "seed", "stage", "budget", "epochs", "status",
                                           column) if name in trials)]
    trials = trials.reset_index(drop=True)  # a frame pooled by hand (pd.concat) may repeat labels
    known = trials[trials["training_settings"].notna()]
    known = known[known.duplicated(["dataset", "label", "params", "seed"], keep=False)]  # few, if any
    began = (known.groupby(["dataset", "sweep"], observed=True)["start_time"].transform("min")
             if "start_time" in known else None)
    known = known.assign(began=began, training=known["training_settings"].map(_training))
    known = known.sort_values(["began", "sweep", "trial_id"])
    return trials.drop(index=known[known.duplicated(key)].index)


# Settings kept with a trial that do not change how it trains: where Tune's state and the
# data's local copy lie, how often it saves a checkpoint, how often a failure is retried.
NOT_TRAINING = ("storage", "data_dir", "checkpoint_seconds", "max_failures")


def _training(settings):
    """A trial's `training_settings` (JSON) as what decides its training: without
    `NOT_TRAINING`, and a dataset file named by its name (a checkout elsewhere holds the
    same file under another folder)."""
    try:
        settings = json.loads(settings)
    except ValueError:
        return settings
    if not isinstance(settings, dict):
        return json.dumps(settings)
    settings["dataset"] = data_file(settings.get("dataset"))
    return json.dumps({k: v for k, v in settings.items() if k not in NOT_TRAINING}, sort_keys=True)


def rank(trials, metric=None, top=TOP):
    """One row per dataset and family, best first: best value, mean of the `top` best
    trials, trials run, trials that reached max_epochs, diverged and failed trials, and the
    best trial's parameters, all of the search (early_stopping="budget": each configuration
    as its longest run). Where confirmation runs exist (`stage`
    "confirm": each family's best trial again with several seeds), also their mean, its
    95% interval and how the family compares with the leader, and the order is theirs."""
    if trials.empty:
        return pd.DataFrame()
    if metric is None and trials["dataset"].nunique() > 1:  # each dataset by its own sweeps' metric
        return pd.concat([rank(of_dataset, None, top) for _, of_dataset in trials.groupby("dataset", observed=True)],
                         ignore_index=True)
    column, mode = metric_column(trials, metric)
    trials = _without_copies(trials.assign(label=trials["optimizer"] + "/" + trials["family"]), column)
    confirming = trials["stage"] == "confirm"
    confirm, trials = trials[confirming], _at_largest_budget(trials[~confirming])
    scored = trials[_scored(trials, column)]
    rows = []
    for (dataset, label), group in trials.groupby(["dataset", "label"], observed=True):
        ok = scored[(scored["dataset"] == dataset) & (scored["label"] == label)]
        ok = ok.sort_values(column, ascending=mode == "min")
        best = ok.iloc[0] if len(ok) else None
        rows.append({
            "dataset": dataset, "family": label, "metric": column,
            "best": best[column] if best is not None else math.nan,
            f"mean_top{top}": ok[column].head(top).mean() if len(ok) else math.nan,
            "trials": len(group), "full": int((group["epochs"] >= group["max_epochs"]).sum()),
            "diverged": int((group["status"] == "diverged").sum()), "errors": int((group["status"] == "error").sum()),
            "best_trial": best["trial_id"] if best is not None else None,
            "best_params": _params_text(best) if best is not None else "",
        })
    # A family whose search trials are not in the store (their file damaged and skipped)
    # but whose confirmation runs are: ranked by those, its best run named as its trial.
    searched_families = {(row["dataset"], row["family"]) for row in rows}
    for (dataset, label), runs in confirm.groupby(["dataset", "label"], observed=True):
        if (dataset, label) not in searched_families:
            runs = runs.assign(ok=_scored(runs, column))
            runs = runs.sort_values(["ok", column], ascending=[False, mode == "min"], na_position="last")
            rows.append({"dataset": dataset, "family": label, "metric": column, "best": math.nan,
                         f"mean_top{top}": math.nan, "trials": 0, "full": 0, "diverged": 0, "errors": 0,
                         "best_trial": runs["trial_id"].iloc[0], "best_params": _params_text(runs.iloc[0])})
    table = pd.DataFrame(rows)
    order = ["dataset", "best"]
    if not confirm.empty:
        searched = table.set_index(["dataset", "family"])["best"]
        steps = metric_steps(pd.concat([rows[["dataset", "sweep", column]] for rows in (trials, confirm)]), column)
        table = table.merge(confirmation(confirm, column, mode, searched, steps=steps), on=["dataset", "family"],
                            how="left")
        confirmed = _confirmed_trials(trials, confirm)
        table["confirmed_trials"] = [confirmed.get((dataset, family))
                                     for dataset, family in zip(table["dataset"], table["family"])]
        # the families that can lead (two runs or more, none diverged) by their mean, equal means
        # by the search's best value as `confirmation` picks the leader, so that it comes first;
        # then the rest (and all, where none can lead) in the search's order
        table["leads"] = table["leads"].astype("boolean").fillna(False)
        table["by_mean"] = table["confirm_mean"].where(table["leads"])
        order = ["dataset", "leads", "by_mean", "best"]
    table = table.sort_values(order, ascending=[key == "dataset" or (key in ("by_mean", "best") and mode == "min")
                                                for key in order], na_position="last")
    table = table.drop(columns=["leads", "by_mean"], errors="ignore")
    table.insert(1, "rank", table.groupby("dataset").cumcount() + 1)
    return table.reset_index(drop=True)


def _scored(trials, column):
    """Which of `trials` ended with a value of `column` that counts (not diverged, no error)."""
    return trials["status"].isin(["completed", "early_stopped"]) & trials[column].notna()


def confirmation_runs(trials, trial):
    """The confirmation runs of stored trial `trial`'s configuration: its sweep's runs of the
    same optimizer, family and parameters (not other sweeps' runs of the family, which the
    ranking pools)."""
    return trials[(trials["stage"] == "confirm") & (trials["sweep"] == trial["sweep"])
                  & (trials["optimizer"] == trial["optimizer"]) & (trials["family"] == trial["family"])
                  & (trials["params"] == trial["params"])]


def _confirmed_trials(trials, confirm):
    """{(dataset, label): the search trials whose configuration the confirmation runs trained
    again (same sweep and parameters)}. A sweep confirms each family's best trial by its own
    metric: ranked by another (`rank --metric`), or over several sweeps, a family's best trial
    may not be one of them."""
    keys = ["dataset", "sweep", "label", "params"]
    runs = confirm[keys].astype(str).drop_duplicates()
    matched = trials[keys + ["trial_id"]].astype(str).merge(runs, on=keys)
    return {key: sorted(set(ids)) for key, ids in matched.groupby(["dataset", "label"])["trial_id"]}


def leading_trial(ranking, dataset):
    """The best trial of the ranking's first family that has one; LrsweepError if no trial
    of `dataset` ended with a result (every one diverged or failed)."""
    if ranking.empty or not ranking["best_trial"].notna().any():
        raise LrsweepError(f"No trial on dataset {dataset!r} ended with a result (each diverged or failed: "
                           f"`lrsweep rank` counts them). Received: dataset={dataset!r}")
    return ranking["best_trial"].dropna().iloc[0]


def confirmation(confirm, column, mode, searched=None, level=0.95, steps=None):
    """Per dataset and family, its confirmation runs: how many have a finite value of the
    metric, their mean, the half-width of the `level` interval of that mean (Student's t),
    and the verdict against the leader: a paired t-test over the runs with the same sweep
    and seed, "tie" where p >= 1 - level (the two cannot be told apart), "behind" where the
    family's runs are worse, "ahead in the paired runs" where they are better (the leader's
    mean then owes its lead to runs the family has no counterpart of: a failed run, another
    sweep); `steps`: {(dataset, sweep): the metric's smallest step} (`metric_steps`, for
    `_paired_p`: of the paired runs' sweeps, the largest). A family whose runs
    are all of other sweeps than the leader's is not paired, and says so. The leader is the
    best mean among the families with two runs or more and none diverged; equal means (on a
    small validation set, often) go to the better of `searched` (the search's best value
    per dataset and family), as the ranking orders them. A family with a diverged run says
    in how many (whatever the metric: a diverged loss is NaN, a diverged accuracy is not),
    one with fewer than two runs says so; neither can lead (`leads`).
    A failed run (`error`) is no evidence either way."""
    from scipy import stats

    runs = confirm[confirm["status"] != "error"]
    finite = runs[runs[column].astype(float).map(math.isfinite)]
    rows = []
    for dataset, of_dataset in runs.groupby("dataset", observed=True):
        labels = sorted(of_dataset["label"].unique())
        values = finite[finite["dataset"] == dataset].pivot_table(
            index=["sweep", "seed"], columns="label", values=column, aggfunc="last").reindex(columns=labels)
        diverged = of_dataset[of_dataset["status"] == "diverged"].groupby("label").size().reindex(labels, fill_value=0)
        ran = of_dataset.groupby("label").size().reindex(labels, fill_value=0)
        leads = (values.count() >= 2) & (diverged == 0)
        tiebreak = [math.nan if searched is None else searched.get((dataset, label), math.nan) for label in labels]
        candidates = pd.DataFrame({"mean": values.mean(), "searched": tiebreak}, index=labels)[leads]
        leader = candidates.sort_values(["mean", "searched"], ascending=mode == "min",
                                        na_position="last").index[0] if len(candidates) else None
        for label in labels:
            own = values[label].dropna()
            n = len(own)
            half = stats.t.ppf((1 + level) / 2, n - 1) * own.std(ddof=1) / math.sqrt(n) if n >= 2 else math.nan
            if label == leader:
                verdict = "leader"
            elif diverged[label]:
                verdict = f"diverged in {diverged[label]} of {ran[label]} runs"
            elif n < 2 or leader is None:
                verdict = "too few runs"
            else:
                pairs = values[[label, leader]].dropna()
                differences = pairs[label] - pairs[leader]
                sweeps = [set(values[key].dropna().index.get_level_values("sweep")) for key in (label, leader)]
                if not sweeps[0] & sweeps[1]:  # other sweeps' runs: other settings, maybe, and nothing to pair
                    verdict = "not paired (another sweep)"
                elif len(pairs) < 2:
                    verdict = "too few paired runs"
                else:
                    step = max((steps or {}).get((dataset, sweep), math.inf)
                               for sweep in pairs.index.get_level_values("sweep"))
                    p = _paired_p(differences, pairs[label], pairs[leader], step)
                    better = differences.mean() > 0 if mode == "max" else differences.mean() < 0
                    verdict = f"{'tie' if p >= 1 - level else 'ahead in the paired runs' if better else 'behind'} " \
                              f"(p={p:.2g})"
            rows.append({"dataset": dataset, "family": label, "confirmed": n, "confirm_mean": own.mean(),
                         "ci95": half, "vs_leader": verdict, "leads": bool(leads[label])})
    return pd.DataFrame(rows, columns=["dataset", "family", "confirmed", "confirm_mean", "ci95", "vs_leader", "leads"])


def _paired_p(differences, runs, leader_runs, step=math.inf):
    """The p-value of a family's runs against the leader's, paired by seed: the t-test's; 1
    where every pair is equal. Where every pair differs by the same amount the t-test has no
    variance to work with and says p=0 whatever the number of runs: where that amount is one
    `step` of the metric or less (one validation sample each time, on a small set) the sign
    test's exact p instead (two runs: 0.5; five: 0.0625); a larger one, every run behind (or
    ahead) by the same margin, the t-test's with the least spread whole steps allow (the sign
    test could never call a family behind by ten points on each of the default five runs)."""
    from scipy import stats

    if (differences == 0).all():
        return 1.0
    # the metrics are float32: one sample behind each time differs in the last bits
    largest = float(np.abs(differences).max())
    if np.ptp(differences.to_numpy()) <= 1e-6 * max(1.0, largest):
        if largest <= 1.5 * step:  # one step (a float32's last bits make one step differ a little)
            return stats.binomtest(int((differences > 0).sum()), len(differences)).pvalue
        # the t-test of that margin with the least spread the metric's steps allow (one run one
        # step off: sd step/sqrt(n)), so that two runs two samples behind are no surer than two
        # runs two and three samples behind
        n = len(differences)
        return float(2 * stats.t.sf(largest * n / step, n - 1))
    return stats.ttest_rel(runs, leader_runs).pvalue


def metric_steps(trials, column):
    """{(dataset, sweep): the smallest step between two values of `column` the sweep's trials
    reached}: one validation sample of an accuracy (on ionosphere's 116, 0.0086), where
    enough trials differ (a sweep's trials share one validation set; pooled sweeps may
    not); `math.inf` where fewer than two values are known. Differences in the last bits of
    a float32 are not steps."""
    steps = {}
    for key, values in trials.groupby(["dataset", "sweep"], observed=True)[column]:
        values = values.to_numpy(dtype=float)
        known = np.unique(values[np.isfinite(values)])
        gaps = np.diff(known)
        gaps = gaps[gaps > 1e-6 * max(1.0, float(np.abs(known).max(initial=0.0)))]
        steps[key] = float(gaps.min()) if len(gaps) else math.inf
    return steps


def format_ranking(table):
    """The ranking as text, one block per dataset."""
    if table.empty:
        return "no trials in the store"
    blocks = []
    for dataset, group in table.groupby("dataset", sort=True):
        column = group["metric"].iloc[0]
        better = "lower" if column.endswith("loss") else "higher"
        shown = group.drop(columns=["dataset", "metric"]).rename(columns={"best": column})
        note = ""
        if "confirm_mean" in shown and shown["confirmed"].isna().all():  # another dataset's were confirmed
            shown = shown.drop(columns=["confirmed", "confirm_mean", "ci95", "vs_leader"])
        others = []  # families whose runs confirm another trial than the best_trial shown
        if "confirmed_trials" in shown:
            for family, best, confirmed in zip(shown["family"], shown["best_trial"], shown.pop("confirmed_trials")):
                if isinstance(confirmed, list) and best is not None and best not in confirmed:
                    others.append(f"{family} of {', '.join(confirmed)}")
        if "confirm_mean" in shown:
            # the verdict first, beside the family; the search's columns after it
            interval = [f"{m:.4f} ± {h:.4f}" if pd.notna(h) else f"{m:.4f}" if pd.notna(m) else "-"
                        for m, h in zip(shown["confirm_mean"], shown["ci95"])]
            confirmed = shown.pop("confirmed").astype("Int64")
            verdict = shown.pop("vs_leader").fillna("-")
            shown = shown.drop(columns=["confirm_mean", "ci95"])
            for at, (name, values) in enumerate((("confirm_mean ± ci95", interval), ("vs_leader", verdict),
                                                 ("confirmed", confirmed)), start=2):
                shown.insert(at, name, values)
            note = ("\nconfirm_mean ± ci95: each family's best trial again with several seeds (mean, 95% interval); "
                    "vs_leader: paired t-test against the leader, tie = cannot be told apart, ahead in the "
                    "paired runs = better on the seeds both ran")
            if others:
                note += (f"\nthe confirmation runs are of another trial than best_trial (its sweep's best by the "
                         f"metric it ranked by): {'; '.join(others)}")
        blocks.append(f"dataset {dataset}: {column} per trial, {better} is better{note}\n"
                      + shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return "\n\n".join(blocks)
