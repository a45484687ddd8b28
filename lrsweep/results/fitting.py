"""`fit-schedule`: which family, with which parameters, reproduces a stored trial's rates.

The trial's rate trace is its `lr` column (the rate in effect during each epoch, read at
the epoch's first step); every family is fitted to it by `lrsweep.schedules.fit` over the
trial's own run length, so polynomial, cosine and one-cycle end where the trial would have.
"""

import json

import pandas as pd

from lrsweep.errors import LrsweepError
from lrsweep.quiet import import_tensorflow
from lrsweep.results.best import trial_row
from lrsweep.results.rank import confirmation, metric_steps
from lrsweep.results.store import read_frame
from lrsweep.schedules.fit import valid_trace


def rate_trace(root, dataset, trial_id=None):
    """(trial row, rates of its epochs 1..n) of trial `trial_id` (default: the best) of `dataset`."""
    row = trial_row(root, dataset, trial_id)
    epochs = read_frame(root, "epochs", dataset)
    epochs = epochs[(epochs["sweep"] == row["sweep"]) & (epochs["trial_id"] == row["trial_id"])].sort_values("epoch")
    rates = [float(r) for r in epochs["lr"]]
    if list(epochs["epoch"]) != list(range(1, len(rates) + 1)) or not valid_trace(rates):
        raise LrsweepError(f"Trial {row['trial_id']} has no complete rate trace to fit (epochs stored: "
                           f"{len(rates)}). Received: trial={row['trial_id']!r}")
    return row, rates


def run_length(row):
    """The epochs the trial's schedule ran over: its rung's budget, else the sweep's max_epochs."""
    budget = row.get("budget")
    return int(budget) if budget == budget and budget is not None else int(row["max_epochs"])


def fit_trace(row, rates):
    """Every family fitted to `rates`, the trace of trial `row` (`rate_trace`), closest first."""
    from lrsweep.schedules.fit import fit_families

    import_tensorflow()
    return fit_families(rates, run_length(row), own=row["family"])


def format_fits(row, rates, fits):
    """The fits as a table, closest first, under a line naming the trial, and the command
    that previews the closest curve."""
    metric = row["metric"]
    value = row[f"final_{metric}"]
    lines = [f"trial {row['trial_id']} of sweep {row['sweep']} ({row['optimizer']}/{row['family']}, "
             f"{metric} {value:.4f}): the rate in effect during epochs 1-{len(rates)} of {run_length(row)}, "
             f"from {rates[0]:.4g} to {rates[-1]:.4g}",
             f"{'family':<12} {'error':>8} {'max_error':>9}  params"]
    for fit in fits:
        lines.append(f"{fit['family']:<12} {fit['error']:>8.2%} {fit['max_error']:>9.2%}  {_params_text(fit['params'])}")
    lines.append("error: the typical factor by which the curve misses the trace (exp of the root mean square of "
                 "the log ratio, minus 1); max_error: the largest")
    if unfitted(fits):
        lines.append(f"not listed: {', '.join(unfitted(fits))}, whose closest curves lie outside their bounds")
    if fits:
        closest = fits[0]
        pairs = " ".join(f"{k}={_number(v)}" for k, v in closest["params"].items())
        lines.append(f"closest: {closest['family']}; preview it: lrsweep schedule {closest['family']} {pairs} "
                     f"--epochs {run_length(row)}")
    return "\n".join(lines)


def confirmation_sweep(row, fit, seeds, root):
    """The sweep that trains `fit` (a family and its parameters) as trial `row` trained: its
    data, model, optimizer and epochs, with its sweep's seed and `seeds` more (seed + 1..
    `seeds`, the seeds that sweep confirmed with), stored in the store at `root`. Only a
    trial that ran its whole schedule to `max_epochs` compares with full runs."""
    from lrsweep.sweep.spec import Sweep

    settings = row.get("training_settings")
    if not isinstance(settings, str):
        raise LrsweepError(f"Trial {row['trial_id']} was stored before lrsweep kept how its trials train (the "
                           f"column `training_settings`), so `--confirm` cannot train it again; a sweep file "
                           f"with configs=[...] can. Received: trial={row['trial_id']!r}")
    length, max_epochs = run_length(row), int(row["max_epochs"])
    if length < max_epochs or int(row["epochs"]) < max_epochs:
        rung = f", in a rung of {length}" if length < max_epochs else ""
        raise LrsweepError(f"Trial {row['trial_id']} did not train its whole schedule to max_epochs "
                           f"({int(row['epochs'])} of {max_epochs} epochs{rung}): `--confirm` compares "
                           f"full runs; choose a trial that ran to max_epochs. Received: trial={row['trial_id']!r}")
    settings = json.loads(settings)
    config = {"family": f"{row['optimizer']}/{fit['family']}", **fit["params"]}
    return Sweep(name=f"fit-{row['trial_id']}", configs=[config], early_stopping=None, confirm_seeds=seeds,
                 results=root, **settings)


def compare_with_trial(root, dataset, row, fit, run):
    """The trial's own schedule against its fitted schedule trained again in run `run`,
    seed by seed: the runs of each (the trial, and its sweep's confirmation runs of the same
    configuration; the fitted schedule's), their mean, its 95% interval, and a paired t-test
    over the seeds both have."""
    trials = read_frame(root, "trials", dataset)
    column, mode = f"final_{row['metric']}", row["metric_mode"]
    # The configuration's full runs in its sweep: the trial, its search twin or the
    # confirmation runs (early_stopping="budget" also stored it at shorter rungs).
    own = trials[(trials["sweep"] == row["sweep"]) & (trials["optimizer"] == row["optimizer"])
                 & (trials["family"] == row["family"]) & (trials["params"] == row["params"])
                 & (trials["epochs"] >= trials["max_epochs"])]
    fitted = trials[trials["sweep"] == run]
    labels = (f"trial {row['trial_id']} ({row['optimizer']}/{row['family']})",
              f"fitted {row['optimizer']}/{fit['family']}")
    runs = pd.concat([own.assign(label=labels[0]), fitted.assign(label=labels[1])]).assign(sweep="both")
    steps = metric_steps(trials[trials["sweep"].isin([row["sweep"], run])].assign(sweep="both"), column)
    table = confirmation(runs, column, mode, steps=steps).set_index("family")
    seeds = sorted(set(own["seed"]) & set(fitted["seed"]))
    lines = [f"trained again: the trial's own schedule against the fitted one, on the same data and model, "
             f"seed by seed (seeds both ran: {', '.join(str(s) for s in seeds) or 'none'})",
             f"{'schedule':<{max(map(len, labels))}}  runs  {column} mean ± ci95  vs_leader"]
    for label in labels:
        if label in table.index:
            got = table.loc[label]
            interval = f"{got['confirm_mean']:.4f}" + (f" ± {got['ci95']:.4f}" if got["ci95"] == got["ci95"] else "")
            lines.append(f"{label:<{max(map(len, labels))}}  {got['confirmed']:>4}  {interval:<{len(column) + 13}}  "
                         f"{got['vs_leader']}")
    if len(own) < 2:
        lines.append(f"(the trial's own schedule ran with seed {int(row['seed'])} only: its sweep confirmed another "
                     "trial, or none)")
    return "\n".join(lines)


def fits_json(row, rates, fits):
    return json.dumps({"trial_id": row["trial_id"], "sweep": row["sweep"], "rates": rates,
                       "epochs": run_length(row), "fits": fits, "not_fitted": unfitted(fits)}, indent=2)


def unfitted(fits):
    """The families fitted (all but plateau) that `fits` lacks: the closest curve of each lay
    outside the family's bounds."""
    from lrsweep.schedules.fit import FITTED

    return [name for name in FITTED if name not in {fit["family"] for fit in fits}]


def _number(value):
    """Six significant digits, or every digit where six would change the value (a fit the
    family takes only unrounded)."""
    if not isinstance(value, float):
        return str(value)
    short = f"{value:.6g}"
    return short if float(short) == value else repr(value)


def _params_text(params):
    return ", ".join(f"{k}={_number(v)}" for k, v in params.items())
