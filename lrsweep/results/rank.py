"""The ranking of (optimizer, schedule family) rows per dataset: plain functions over the
`trials` table."""

import json
import math

import pandas as pd

from lrsweep.errors import LrsweepError
from lrsweep.results.store import LOGS

TOP = 3


def metric_column(trials, metric=None):
    """(column, mode) the ranking orders by: `final_<metric>` of each trial by default, the
    sweep's own metric when none is named; `best_...`/`final_...` columns as named."""
    if metric is None:
        metric = trials["metric"].mode().iloc[0] if len(trials) else "val_accuracy"
    column = metric if metric.startswith(("best_", "final_")) else f"final_{metric}"
    if column.split("_", 1)[1] not in LOGS:
        valid = ", ".join(LOGS)
        raise LrsweepError(f"Argument `metric` must be one of {valid} (or best_/final_ of one). Received: metric={metric!r}")
    return column, "min" if column.endswith("loss") else "max"


def _params_text(row):
    params = json.loads(row["params"]) if isinstance(row["params"], str) else {}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def rank(trials, metric=None, top=TOP):
    """One row per dataset and family, best first: best value, mean of the `top` best
    trials, trials run, trials that reached max_epochs, diverged and failed trials, and the
    best trial's parameters."""
    if trials.empty:
        return pd.DataFrame()
    column, mode = metric_column(trials, metric)
    trials = trials.assign(label=trials["optimizer"] + "/" + trials["family"])
    scored = trials[trials["status"].isin(["completed", "early_stopped"]) & trials[column].notna()]
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
    table = pd.DataFrame(rows)
    table = table.sort_values(["dataset", "best"], ascending=[True, mode == "min"], na_position="last")
    table.insert(1, "rank", table.groupby("dataset").cumcount() + 1)
    return table.reset_index(drop=True)


def format_ranking(table):
    """The ranking as text, one block per dataset."""
    if table.empty:
        return "no trials in the store"
    blocks = []
    for dataset, group in table.groupby("dataset", sort=True):
        column = group["metric"].iloc[0]
        better = "lower" if column.endswith("loss") else "higher"
        shown = group.drop(columns=["dataset", "metric"]).rename(columns={"best": column})
        blocks.append(f"dataset {dataset}: {column} per trial, {better} is better\n"
                      + shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return "\n\n".join(blocks)
