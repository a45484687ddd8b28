"""Every picture lrsweep draws (matplotlib, no screen needed)."""

import math


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rates(series, path, title="learning rate in effect during each epoch"):
    """One line per schedule: `series` maps a label to the rates of epochs 1..N. Returns the figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rates in series.items():
        ax.plot(range(1, len(rates) + 1), rates, marker="." if len(rates) <= 60 else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    _finish(plt, fig, ax, path)
    return fig


def _best_trials(trials, table):
    """(label, trial row) of each family's best trial, in the ranking's order."""
    rows = []
    for _, ranked in table.dropna(subset=["best_trial"]).iterrows():
        chosen = trials[trials["trial_id"] == ranked["best_trial"]]
        if len(chosen):
            rows.append((ranked["family"], chosen.iloc[-1]))
    return rows


def _per_epoch(epochs, trial_id, column, after=0):
    rows = epochs[(epochs["trial_id"] == trial_id) & (epochs["epoch"] >= after)].sort_values("epoch")
    return rows["epoch"].to_numpy(), rows[column].to_numpy()


def family_lines(trials, table, epochs, column):
    """What the pictures draw of each family, in the ranking's order: (label, its best trial's
    epochs and values of `column`, the rest of its run or None). A trial stopped before its
    run's end (by ASHA) says so in its label, and the rest is the same configuration's
    first confirmation run from that epoch on (its schedule, as it went on; on the curves, how
    it went on with another seed), where the sweep ran one."""
    from lrsweep.results.fitting import run_length
    from lrsweep.results.rank import confirmation_runs

    lines = []
    for label, trial in _best_trials(trials, table):
        own = _per_epoch(epochs, trial["trial_id"], column)
        trained, length = int(trial["epochs"]), run_length(trial)
        rest = None
        if trained < length:
            label = f"{label} (stopped at epoch {trained} of {length})"
            again = confirmation_runs(trials, trial)
            again = again[again["epochs"] > trained]
            if len(again):
                rest = _per_epoch(epochs, again.sort_values("seed")["trial_id"].iloc[0], column, after=trained)
        lines.append((label, own, rest))
    return lines


def _draw(ax, lines, **style):
    """`family_lines` on `ax`: the rest of a run dashed, in its trial's colour."""
    for label, own, rest in lines:
        (line,) = ax.plot(*own, label=label, **style)
        if rest is not None:
            ax.plot(*rest, linestyle="--", color=line.get_color())
    if any(rest is not None for _, _, rest in lines):
        ax.plot([], [], "k--", label="dashed: on as its first confirmation run (another seed) trained")


def _ranked(root, dataset):
    """(trials, ranking) of a dataset in the store at `root`; LrsweepError if it has none,
    or no trial with a result to draw."""
    from lrsweep.results.rank import leading_trial, rank
    from lrsweep.results.store import dataset_trials

    trials = dataset_trials(root, dataset)
    table = rank(trials)
    leading_trial(table, dataset)
    return trials, table


def sweep_pictures(root, dataset, out_dir, ranked=None):
    """The pictures of a dataset's sweeps in the store at `root`, written into `out_dir`:
    the rate and the learning curves of each family's best trial, and the ranking (with
    the confirmation runs' means and 95% intervals where they exist). Returns the paths.
    `ranked`: the dataset's (trials, ranking), if the caller has read them already."""
    import os

    from lrsweep.results.store import read_frame

    trials, table = ranked or _ranked(root, dataset)
    epochs = read_frame(root, "epochs", dataset)
    column = table["metric"].iloc[0]
    metric = column.split("_", 1)[1]
    plt = _pyplot()
    paths = {name: os.path.join(out_dir, f"{name}.png") for name in ("rates", "curves", "ranking")}

    fig, ax = plt.subplots(figsize=(8, 4.5))
    _draw(ax, family_lines(trials, table, epochs, "lr"), marker=".")
    ax.set(xlabel="epoch", ylabel="learning rate", yscale="log",
           title=f"{dataset}: the rate in effect, best trial of each family")
    _finish(plt, fig, ax, paths["rates"])

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    _draw(left, family_lines(trials, table, epochs, metric))
    _draw(right, family_lines(trials, table, epochs, "loss"))
    left.set(xlabel="epoch", ylabel=metric, title=f"{dataset}: {metric}, best trial of each family")
    right.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
    right.grid(alpha=0.3)
    _finish(plt, fig, left, paths["curves"])

    shown = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.5))
    if "confirm_mean" in shown and shown["confirm_mean"].notna().any():
        ax.barh(shown["family"], shown["confirm_mean"], xerr=shown["ci95"], capsize=3, color="tab:blue",
                label="confirmation runs: mean, 95% interval")
        ax.plot(shown["best"], shown["family"], "k|", markersize=14, label="best trial of the search")
    else:
        ax.barh(shown["family"], shown["best"], color="tab:blue", label="best trial of the search")
    ax.set(xlabel=column, title=f"{dataset}: ranking")
    limits = ranking_limits(shown)
    if limits:  # bars from zero would hide the differences that matter
        ax.set_xlim(*limits)
    _finish(plt, fig, ax, paths["ranking"])
    return list(paths.values())


def ranking_limits(table):
    """The x-axis of the ranking picture: around every best value, confirmation mean and 95%
    interval of `table` (a ranking), padded; None where it holds no finite value."""
    import pandas as pd

    parts = [table["best"]]
    if "confirm_mean" in table:  # the intervals' ends too, or the widest is cut off
        ci95 = table["ci95"].fillna(0) if "ci95" in table else 0
        parts += [table["confirm_mean"] - ci95, table["confirm_mean"] + ci95]
    values = pd.concat(parts, ignore_index=True).dropna()
    values = values[values.map(math.isfinite)]
    if not len(values):
        return None
    low, high = values.min(), values.max()
    pad = 0.1 * (high - low) or 0.01
    return low - pad, high + pad


def _finish(plt, fig, ax, path):
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        _write(path, lambda: fig.savefig(path, dpi=100))
    finally:
        plt.close(fig)


def _write(path, write):
    """`write()` the file `path`, its folder made first; LrsweepError naming the file where the
    system refuses (a traceback before: the checks of the command line cannot foresee them all)."""
    import os

    from lrsweep.errors import LrsweepError

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write()
    except OSError as e:
        raise LrsweepError(f"Cannot write {path}: {e.strerror or e}"
                           + (f" ({e.filename})" if e.filename and str(e.filename) != str(path) else "")) from None


def sweep_report(root, dataset, path):
    """One self-contained HTML page: the ranking table and the pictures (embedded)."""
    import base64
    import html
    import os
    import tempfile

    from lrsweep.results.rank import format_ranking

    ranked = _ranked(root, dataset)
    table = ranked[1]
    with tempfile.TemporaryDirectory() as scratch:
        pictures = sweep_pictures(root, dataset, scratch, ranked)
        images = [base64.b64encode(open(p, "rb").read()).decode() for p in pictures]
    body = "\n".join(f'<p><img alt="{os.path.basename(p)}" src="data:image/png;base64,{data}"></p>'
                     for p, data in zip(pictures, images))
    page = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>lrsweep: {html.escape(dataset)}</title>"
            "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:90%} "
            "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>\n"
            f"<h1>lrsweep: {html.escape(dataset)}</h1>\n<p>store: {html.escape(str(root))}</p>\n"
            f"<pre>{html.escape(format_ranking(table).splitlines()[0])}</pre>\n"
            + table.drop(columns=["dataset", "confirmed_trials"], errors="ignore").to_html(
                index=False, float_format=lambda v: f"{v:.4f}", na_rep="")
            + f"\n{body}\n</body></html>\n")

    def write():
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)

    _write(path, write)
    return path


def plot_lr_range(found, path):
    """The range test: smoothed loss against rate (log), one line per optimizer, with the
    two suggested rates marked. `found` maps an optimizer to (rows, steepest, minimum / 10);
    one without rows (no curve) is left out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for optimizer, (rows, steepest, tenth) in found.items():
        if not rows:
            continue
        lrs, losses = [r["lr"] for r in rows], [r["smoothed_loss"] for r in rows]
        (line,) = ax.plot(lrs, losses, label=optimizer)
        for lr, style, what in ((steepest, "--", "steepest"), (tenth, ":", "minimum / 10")):
            if lr == lr:
                ax.axvline(lr, color=line.get_color(), linestyle=style, label=f"{optimizer} {what}: {lr:.3g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss",
           title="learning-rate range test")
    _finish(plt, fig, ax, path)
