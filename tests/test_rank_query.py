"""Ranking and SQL over a store with known answers, written and read through the store, and
the `rank` and `query` commands run as a user runs them."""

import csv
import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lrsweep.errors import LrsweepError
from lrsweep.results.query import query
from lrsweep.results.rank import format_ranking, leading_trial, rank
from lrsweep.results.store import LATER_COLUMNS, SCHEMAS, read_frame, write_rows
from tests.conftest import REPO, assert_refused, lrsweep

FAMILY_PARAMS = {"sgd/step": {"drop": 0.5, "epochs_drop": 10}, "adam/constant": {},
                 "sgd/cosine": {"alpha": 0.0, "warmup_epochs": 2}, "sgd/plateau": {"factor": 0.5}}
MAX_EPOCHS = 10
# trial_id, family, status, epochs, initial_lr, final_val_accuracy, best_val_accuracy, final_val_loss
DIGITS = [
    ("s1", "sgd/step", "completed", 10, 0.1, 0.90, 0.91, 0.10),
    ("s2", "sgd/step", "early_stopped", 3, 0.2, 0.80, 0.82, 0.50),
    ("s3", "sgd/step", "completed", 10, 0.3, 0.85, 0.86, 0.40),
    ("s4", "sgd/step", "early_stopped", 1, 0.4, 0.70, 0.70, 0.90),
    ("s5", "sgd/step", "diverged", 2, 5.0, 0.99, 0.99, 0.01),  # would win every metric if it were scored
    ("a1", "adam/constant", "completed", 10, 0.001, 0.95, 0.95, 0.20),
    ("a2", "adam/constant", "early_stopped", 4, 0.01, 0.60, 0.65, 0.80),
    ("a3", "adam/constant", "error", 2, 0.1, None, None, None),
    ("c1", "sgd/cosine", "completed", 10, 0.05, 0.88, 0.97, 0.25),
    ("p1", "sgd/plateau", "error", 0, 0.1, None, None, None),
]
IONOSPHERE = [
    ("i1", "sgd/step", "completed", 10, 0.1, 0.93, 0.94, 0.20),
    ("i2", "adam/constant", "completed", 10, 0.001, 0.88, 0.90, 0.30),
]


def trial_row(trial_id, label, status, epochs, initial_lr, final_acc, best_acc, final_loss):
    optimizer, family = label.split("/")
    params = {**FAMILY_PARAMS[label], "initial_lr": initial_lr}
    return {"trial_id": trial_id, "family": family, "optimizer": optimizer, **params,
            "params": json.dumps(params, sort_keys=True), "status": status, "epochs": epochs,
            "max_epochs": MAX_EPOCHS, "metric": "val_accuracy", "metric_mode": "max",
            "final_val_accuracy": final_acc, "best_val_accuracy": best_acc, "final_val_loss": final_loss}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("results"))
    # s1 was stored once before a resume, early stopped: its later record replaces it.
    write_rows(root, "trials", "digits", "sweep-a", [trial_row("s1", "sgd/step", "early_stopped", 3, 0.1,
                                                               0.99, 0.99, 0.01)])
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS[:5]])
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS[5:]])
    write_rows(root, "trials", "ionosphere", "sweep-b", [trial_row(*row) for row in IONOSPHERE])
    epochs = [{"trial_id": "s1", "epoch": e, "lr": 0.1, "val_accuracy": 0.3 * e} for e in (1, 2, 3)]
    epochs += [{"trial_id": "a1", "epoch": e, "lr": 0.001, "val_accuracy": 0.4 * e} for e in (1, 2)]
    write_rows(root, "epochs", "digits", "sweep-a", epochs)
    return root


@pytest.fixture(scope="module")
def trials(results):
    return read_frame(results, "trials")


def block(table, dataset):
    return table[table["dataset"] == dataset]


@pytest.mark.parametrize("metric, order, best", [
    (None, ["adam/constant", "sgd/step", "sgd/cosine", "sgd/plateau"], 0.95),
    ("val_accuracy", ["adam/constant", "sgd/step", "sgd/cosine", "sgd/plateau"], 0.95),
    ("best_val_accuracy", ["sgd/cosine", "adam/constant", "sgd/step", "sgd/plateau"], 0.97),
    ("val_loss", ["sgd/step", "adam/constant", "sgd/cosine", "sgd/plateau"], 0.10),
])
def test_ranking_order_and_best_value_follow_the_metric_and_its_mode(trials, metric, order, best):
    digits = block(rank(trials, metric), "digits")
    assert list(digits["family"]) == order
    assert list(digits["rank"]) == [1, 2, 3, 4]
    assert digits["best"].iloc[0] == pytest.approx(best)


def test_each_dataset_is_ranked_on_its_own(trials):
    table = rank(trials)
    assert list(table["dataset"].unique()) == ["digits", "ionosphere"]
    ionosphere = block(table, "ionosphere")
    assert list(ionosphere["family"]) == ["sgd/step", "adam/constant"]
    assert list(ionosphere["rank"]) == [1, 2]
    assert list(ionosphere["trials"]) == [1, 1]


def test_a_family_row_counts_every_trial_and_scores_only_finished_ones(trials):
    rows = block(rank(trials), "digits").set_index("family")
    step, adam = rows.loc["sgd/step"], rows.loc["adam/constant"]
    assert step["best"] == pytest.approx(0.90)  # not the diverged trial's 0.99
    assert step["mean_top3"] == pytest.approx((0.90 + 0.85 + 0.80) / 3)
    assert (step["trials"], step["full"], step["diverged"], step["errors"]) == (5, 2, 1, 0)
    assert step["best_trial"] == "s1"
    assert step["best_params"] == "drop=0.5, epochs_drop=10, initial_lr=0.1"
    assert adam["mean_top3"] == pytest.approx((0.95 + 0.60) / 2)
    assert (adam["trials"], adam["full"], adam["diverged"], adam["errors"]) == (3, 1, 0, 1)
    assert adam["best_params"] == "initial_lr=0.001"


def test_a_family_without_a_scored_trial_has_no_best(trials):
    plateau = block(rank(trials), "digits").set_index("family").loc["sgd/plateau"]
    assert math.isnan(plateau["best"]) and plateau["best_params"] == ""
    assert (plateau["trials"], plateau["errors"]) == (1, 1)


def test_an_unknown_metric_is_bad_input_naming_it(trials):
    with pytest.raises(LrsweepError, match="metric='f1'"):
        rank(trials, "f1")


def test_format_ranking_prints_one_block_per_dataset_best_first(trials):
    text = format_ranking(rank(trials, "val_loss"))
    digits, ionosphere = text.split("\n\n")
    assert digits.splitlines()[0] == "dataset digits: final_val_loss per trial, lower is better"
    assert ionosphere.startswith("dataset ionosphere:")
    lines = digits.splitlines()[2:]
    assert [line.split()[:2] for line in lines] == [
        ["1", "sgd/step"], ["2", "adam/constant"], ["3", "sgd/cosine"], ["4", "sgd/plateau"]]
    assert "drop=0.5, epochs_drop=10, initial_lr=0.1" in lines[0]


CONFIRMED = {"sgd/step": [0.90, 0.92, 0.91, 0.93],       # the leader
             "adam/constant": [0.89, 0.915, 0.905, 0.925],  # behind on every seed: a paired test sees it
             "sgd/cosine": [0.93, 0.88, 0.92, 0.89]}       # further behind on average, run for run a toss-up
T_975_3 = 3.182446  # Student's t, 97.5% quantile, 3 degrees of freedom
# The initial rate of each family's best trial in DIGITS by final_val_accuracy: what its sweep confirmed.
BEST_LR = {"sgd/step": 0.1, "adam/constant": 0.001, "sgd/cosine": 0.05}


def test_confirmation_runs_give_a_mean_an_interval_and_a_paired_verdict(tmp_path):
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    confirm = [{**trial_row(f"{label}-{seed}", label, "completed", MAX_EPOCHS, BEST_LR[label], value, value, 0.1),
                "stage": "confirm", "seed": seed}
               for label, values in CONFIRMED.items() for seed, value in enumerate(values, 1)]
    confirm.append({**trial_row("cosine-5", "sgd/cosine", "error", 1, BEST_LR["sgd/cosine"], None, None, None),
                    "stage": "confirm", "seed": 5})  # a failed run is no evidence
    write_rows(root, "trials", "digits", "sweep-a", confirm)

    table = rank(read_frame(root, "trials")).set_index("family")

    assert list(table.index) == ["sgd/step", "adam/constant", "sgd/cosine", "sgd/plateau"]  # by confirm_mean
    assert table.loc["sgd/step", "trials"] == 5 and table.loc["sgd/step", "best"] == 0.90  # the search's own
    for label, values in CONFIRMED.items():
        mean = sum(values) / 4
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
        assert table.loc[label, "confirmed"] == 4
        assert table.loc[label, "confirm_mean"] == pytest.approx(mean)
        assert table.loc[label, "ci95"] == pytest.approx(T_975_3 * sd / 2, rel=1e-5)
    assert table.loc["sgd/step", "vs_leader"] == "leader"
    assert table.loc["adam/constant", "vs_leader"].startswith("behind")
    assert table.loc["sgd/cosine", "vs_leader"].startswith("tie")
    assert math.isnan(table.loc["sgd/plateau", "confirm_mean"])
    text = format_ranking(rank(read_frame(root, "trials")))
    assert "95% interval" in text
    header, leader, *_, unconfirmed = text.splitlines()[2:]
    assert header.split()[:7] == ["rank", "family", "confirm_mean", "±", "ci95", "vs_leader", "confirmed"]
    half = T_975_3 * math.sqrt(sum((v - 0.915) ** 2 for v in CONFIRMED["sgd/step"]) / 3) / 2
    assert leader.split()[:7] == ["1", "sgd/step", "0.9150", "±", f"{half:.4f}", "leader", "4"]
    assert unconfirmed.split()[:5] == ["4", "sgd/plateau", "-", "-", "<NA>"]


def test_a_second_launch_with_the_same_seed_adds_no_evidence_of_copies(tmp_path):
    """Launched twice with one seed, a sweep trains the same trials and confirmation runs
    again, ending alike: the ranking is the first launch's, not one of twice the runs (which
    would narrow every interval and turn ties into `behind`). A trial of the second launch
    that ended otherwise counts."""
    def launched(root, sweep, prefix, more=(), storage="/a/tune"):  # where Tune's state lies changes no training
        settings = {"training_settings": json.dumps({"model": "mlp", "seed": 0, "storage": storage,
                                                     "dataset": f"csv:/{prefix}/digits.csv"})}
        search = [{**trial_row(f"{prefix}{row[0]}", *row[1:]), **settings, "seed": 0} for row in [*DIGITS, *more]]
        confirm = [{**trial_row(f"{prefix}{label}-{seed}", label, "completed", MAX_EPOCHS, BEST_LR[label], value,
                                value, 0.1), **settings, "stage": "confirm", "seed": seed}
                   for label, values in CONFIRMED.items() for seed, value in enumerate(values, 1)]
        write_rows(root, "trials", "digits", sweep, search + confirm)

    once, twice = str(tmp_path / "once"), str(tmp_path / "twice")
    launched(once, "sweep-a", "")
    launched(twice, "sweep-a", "")
    launched(twice, "sweep-b", "b-", more=[("x1", "sgd/step", "completed", MAX_EPOCHS, 0.1, 0.5, 0.5, 0.1)],
             storage="/b/tune")
    first, both = (rank(read_frame(root, "trials")).set_index("family") for root in (once, twice))
    columns = ["best", "confirmed", "confirm_mean", "ci95", "vs_leader"]
    assert both[columns].equals(first[columns])
    assert both.loc["sgd/step", "trials"] == first.loc["sgd/step", "trials"] + 1  # b-x1 ended otherwise
    assert (both.drop(index="sgd/step")["trials"] == first.drop(index="sgd/step")["trials"]).all()
    # pooled by hand, two frames' index labels repeat: still each copy once, nothing else
    frame = read_frame(twice, "trials")
    pooled = pd.concat([frame[frame["sweep"] == sweep].reset_index(drop=True) for sweep in ("sweep-a", "sweep-b")])
    assert rank(pooled).set_index("family")[["trials", *columns]].equals(both[["trials", *columns]])


def test_a_ranking_by_another_metric_than_the_sweeps_says_which_trial_was_confirmed(tmp_path):
    """A sweep confirms each family's best trial by its own metric; `rank --metric` may pick
    another best_trial, beside the runs of the first: the ranking says whose runs they are."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [
        trial_row("t1", "sgd/step", "completed", MAX_EPOCHS, 0.1, 0.90, 0.90, 0.2),  # the best by final accuracy
        trial_row("t2", "sgd/step", "completed", MAX_EPOCHS, 0.3, 0.85, 0.95, 0.3),  # by best accuracy
        trial_row("a1", "adam/constant", "completed", MAX_EPOCHS, 0.001, 0.80, 0.80, 0.4),
        *confirm_rows([("sgd/step", seed, "completed", 0.9) for seed in (1, 2)]),  # t1's rate, 0.1
        *[{**row, "initial_lr": 0.001, "params": json.dumps({"initial_lr": 0.001})}
          for row in confirm_rows([("adam/constant", seed, "completed", 0.8) for seed in (1, 2)])]])
    trials = read_frame(root, "trials")
    assert "another trial than best_trial" not in format_ranking(rank(trials))
    text = format_ranking(rank(trials, "best_val_accuracy"))
    assert rank(trials, "best_val_accuracy").set_index("family").loc["sgd/step", "best_trial"] == "t2"
    assert "the confirmation runs are of another trial than best_trial" in text
    assert text.count(" of t1") == 1 and "adam/constant of" not in text


def test_equal_confirmation_means_make_the_first_row_the_leader(tmp_path):
    """On a small validation set the confirmation runs of two families often score alike
    (one sample is 0.86 points on ionosphere): the ranking orders them by the search's best
    value, and the leader the others are tested against is its first row, not whichever
    family sorts first by name."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    write_rows(root, "trials", "digits", "sweep-a", [
        {**trial_row(f"{label}-{seed}", label, "completed", MAX_EPOCHS, 0.1, 0.98, 0.98, 0.1), "stage": "confirm",
         "seed": seed} for label in ("sgd/cosine", "sgd/step") for seed in (1, 2)])  # search: cosine 0.88, step 0.90

    table = rank(read_frame(root, "trials"))

    assert table[["family", "vs_leader"]].values.tolist()[:2] == [["sgd/step", "leader"], ["sgd/cosine", "tie (p=1)"]]
    assert format_ranking(table).splitlines()[3].split()[:2] == ["1", "sgd/step"]


def test_a_family_whose_search_file_is_damaged_is_ranked_by_its_confirmation_runs(tmp_path):
    """A skipped file of search trials took its families out of the ranking, their
    confirmation runs in other files with them: the leader's too, so no row said `leader`,
    the first said "tie" against a family not shown, and `best` named the second's trial."""
    root = str(tmp_path)
    damaged = write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS[:5]])  # sgd/step
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS[5:]])
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(
        [("sgd/step", seed, "completed", 0.97 + seed / 1000) for seed in (1, 2, 3)]
        + [("adam/constant", seed, "completed", 0.90 + seed / 1000) for seed in (1, 2, 3)]))
    raw = bytearray(open(damaged, "rb").read())
    raw[4:200] = b"\xff" * 196
    open(damaged, "wb").write(bytes(raw))

    done = lrsweep("rank", "--results", root)

    assert done.returncode == 0 and done.stderr.count("warning: skipping") == 1 and damaged in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines[[line.split()[:1] for line in lines].index(["rank"]) + 1:]]
    assert [row[:2] for row in rows[:2]] == [["1", "sgd/step"], ["2", "adam/constant"]] and rows[0][5] == "leader", rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the damaged file's
        assert leading_trial(rank(read_frame(root, "trials")), "digits") == "sgd/step-3"  # the trial `best` gives
    assert open(damaged, "rb").read() == bytes(raw)


@pytest.mark.parametrize("runs, verdict", [(2, "tie (p=0.5)"), (6, "behind (p=0.031)")])
def test_runs_one_sample_behind_the_leaders_each_time_are_behind_only_with_enough_runs(tmp_path, runs, verdict):
    """Each of cosine's runs one validation sample (of 116) below step's of the same seed: no
    variance for the t-test, which said "behind (p=0)" after two runs, with a RuntimeWarning.
    The sign test's exact p: two runs cannot tell, six can."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    correct = [106, 107, 108, 107, 106, 108][:runs]  # of 116 validation samples, as Keras reports them: float32
    # a sweep of their own: its values are all of one validation set (DIGITS' 0.90 is not k/116)
    write_rows(root, "trials", "digits", "sweep-c", confirm_rows(
        [("sgd/step", seed, "completed", float(np.float32(k / 116))) for seed, k in enumerate(correct, 1)]
        + [("sgd/cosine", seed, "completed", float(np.float32((k - 1) / 116))) for seed, k in enumerate(correct, 1)]))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = rank(read_frame(root, "trials")).set_index("family")

    assert table.loc["sgd/step", "vs_leader"] == "leader" and table.loc["sgd/cosine", "vs_leader"] == verdict


def test_runs_behind_by_the_same_margin_of_many_samples_each_time_are_behind(tmp_path):
    """Cosine at 74 of 116 on each of the default five seeds, step at 115: no variance for the
    t-test, and the sign test's least p over five runs is 0.0625, so a family forty points
    behind on every run was a "tie"; one sample each time still goes to the sign test."""
    root = str(tmp_path)
    search = [(f"s{k}", "sgd/step", "completed", MAX_EPOCHS, 0.1, float(np.float32(k / 116)), 0.9, 0.3)
              for k in range(70, 116)]  # the sweep's search: every step of its validation set
    search += [(f"c{k}", label, "completed", MAX_EPOCHS, 0.1, float(np.float32(k / 116)), 0.9, 0.3)
               for k, label in ((74, "sgd/cosine"), (114, "adam/constant"))]
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in search])
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(
        [("sgd/step", seed, "completed", float(np.float32(115 / 116))) for seed in range(1, 6)]
        + [("sgd/cosine", seed, "completed", float(np.float32(74 / 116))) for seed in range(1, 6)]
        + [("adam/constant", seed, "completed", float(np.float32(114 / 116))) for seed in range(1, 6)]))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verdicts = rank(read_frame(root, "trials")).set_index("family")["vs_leader"]

    assert verdicts.to_dict() == {"sgd/step": "leader", "adam/constant": "tie (p=0.062)",
                                  "sgd/cosine": "behind (p=3.4e-09)"}  # t = 41 steps * 5 runs, 4 df


def test_two_runs_behind_by_a_constant_margin_are_no_surer_than_two_that_vary(tmp_path):
    """With no spread the t-test said p=0 for two runs two samples behind, and p=0.13 for two
    runs two and three samples behind: a constant margin now gets the spread of one step."""
    root = str(tmp_path)
    search = [(f"s{k}", "sgd/step", "completed", MAX_EPOCHS, 0.1, float(np.float32(k / 116)), 0.9, 0.3)
              for k in range(70, 116)]
    search += [(f"c{k}", label, "completed", MAX_EPOCHS, 0.1, 0.5, 0.9, 0.3) for k, label in
               ((1, "sgd/cosine"), (2, "adam/constant"))]
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in search])
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(
        [("sgd/step", seed, "completed", float(np.float32(110 / 116))) for seed in (1, 2)]
        + [("sgd/cosine", seed, "completed", float(np.float32(108 / 116))) for seed in (1, 2)]
        + [("adam/constant", seed, "completed", float(np.float32(k / 116))) for seed, k in ((1, 108), (2, 107))]))

    verdicts = rank(read_frame(root, "trials")).set_index("family")["vs_leader"]

    assert (verdicts["sgd/cosine"], verdicts["adam/constant"]) == ("tie (p=0.16)", "tie (p=0.13)")


def test_a_family_better_on_every_run_it_shares_with_the_leader_is_not_behind_it(tmp_path):
    """Step leads by its mean over five runs; adam's two last runs failed, and on the three
    seeds both ran adam is better each time. The two-sided test's p said "behind"."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    runs = [("sgd/step", seed, "completed", value) for seed, value in enumerate([0.90, 0.91, 0.90, 1.0, 1.0], 1)]
    runs += [("adam/constant", seed, "completed", value) for seed, value in enumerate([0.93, 0.935, 0.94], 1)]
    runs += [("adam/constant", seed, "error", None) for seed in (4, 5)]
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(runs))

    table = rank(read_frame(root, "trials")).set_index("family")

    assert table.loc["sgd/step", "vs_leader"] == "leader"
    assert table.loc["adam/constant", "vs_leader"] == "ahead in the paired runs (p=0.019)"


def test_fit_schedule_confirm_judges_a_constant_margin_as_rank_does(tmp_path):
    """`fit-schedule --confirm`'s comparison called the fitted schedule 41 samples (of 116)
    behind on each of five seeds a tie, where `rank` says behind."""
    from lrsweep.results.fitting import compare_with_trial

    root = str(tmp_path)
    search = [trial_row(f"s{k}", "sgd/step", "completed", MAX_EPOCHS, 0.1 + k / 1000, float(np.float32(k / 116)), 0.9,
                        0.3) for k in range(70, 115)]
    own = trial_row("t1", "sgd/step", "completed", MAX_EPOCHS, 0.1, float(np.float32(115 / 116)), 0.99, 0.1)
    write_rows(root, "trials", "digits", "sweep-a", search + [{**own, "seed": 0}] + [
        {**own, "trial_id": f"c{seed}", "seed": seed, "stage": "confirm"} for seed in range(1, 5)])
    fitted = trial_row("f", "sgd/cosine", "completed", MAX_EPOCHS, 0.1, float(np.float32(74 / 116)), 0.7, 0.5)
    write_rows(root, "trials", "digits", "fit-t1", [{**fitted, "trial_id": f"f{seed}", "seed": seed,
                                                     "stage": "confirm" if seed else "search"} for seed in range(5)])

    lines = compare_with_trial(root, "digits", {**own, "sweep": "sweep-a", "seed": 0}, {"family": "cosine"},
                               "fit-t1").splitlines()

    assert lines[2].split()[-1] == "leader" and lines[3].split()[-2] == "behind", lines


def confirm_rows(runs, **fields):
    """Confirmation runs: (label, seed, status, final value of the metric) each."""
    return [{**trial_row(f"{label}-{seed}", label, status, MAX_EPOCHS, 0.1, value, value, value), "stage": "confirm",
             "seed": seed, **fields} for label, seed, status, value in runs]


def test_a_family_with_one_confirmation_run_that_succeeded_does_not_lead(tmp_path):
    """Four of cosine's five runs failed: its one run is no interval, whatever its value,
    and the leader (and so `best`) is the family whose five runs say so."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    runs = [("sgd/step", seed, "completed", value) for seed, value in enumerate([0.92, 0.93, 0.94, 0.93, 0.93], 1)]
    runs += [("sgd/cosine", 1, "completed", 0.97)] + [("sgd/cosine", seed, "error", None) for seed in range(2, 6)]
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(runs))

    table = rank(read_frame(root, "trials"))

    assert table[["family", "confirmed", "vs_leader"]].values.tolist()[0] == ["sgd/step", 5, "leader"]
    assert table.set_index("family").loc["sgd/cosine", ["confirmed", "vs_leader"]].tolist() == [1, "too few runs"]


def test_where_no_family_can_lead_the_search_orders_the_ranking(tmp_path):
    """Cosine's one run that finished and step's five, one of them diverged: neither leads,
    so neither confirmation mean orders the rows (cosine's 0.97 put it first, and best took
    it); the search's best values do (step 0.90, cosine 0.88)."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    runs = [("sgd/step", seed, "completed", 0.92) for seed in range(1, 5)] + [("sgd/step", 5, "diverged", 0.1)]
    runs += [("sgd/cosine", 1, "completed", 0.97)] + [("sgd/cosine", seed, "error", None) for seed in range(2, 6)]
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(runs))

    table = rank(read_frame(root, "trials"))

    assert table["family"].tolist()[:3] == ["adam/constant", "sgd/step", "sgd/cosine"]  # unconfirmed 0.95 first
    verdicts = table.set_index("family")["vs_leader"]
    assert (verdicts["sgd/step"], verdicts["sgd/cosine"]) == ("diverged in 1 of 5 runs", "too few runs")
    assert "leader" not in verdicts.dropna().tolist()


def test_a_family_whose_confirmation_runs_diverged_does_not_lead_on_the_runs_that_did_not(tmp_path):
    """A val_loss sweep: a diverged run's loss is NaN or infinite. Leaving those runs out
    made constant the leader on its one run that did not diverge; they count against it,
    the rest of the table stays finite, and nothing warns."""
    root = str(tmp_path)
    loss = {"metric": "val_loss", "metric_mode": "min"}
    write_rows(root, "trials", "digits", "sweep-a", [{**trial_row(*row), **loss} for row in DIGITS])
    runs = [("sgd/step", seed, "completed", value) for seed, value in enumerate([0.10, 0.12, 0.09, 0.11, 0.10], 1)]
    runs += [("adam/constant", 1, "completed", 0.05)]
    runs += [("adam/constant", seed, "diverged", value) for seed, value in
             zip(range(2, 6), [math.nan, math.inf, math.nan, math.inf])]
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(runs, **loss))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = rank(read_frame(root, "trials"))

    assert table[["family", "vs_leader"]].values.tolist()[:2] == [
        ["sgd/step", "leader"], ["adam/constant", "diverged in 4 of 5 runs"]]
    assert table["confirm_mean"].dropna().map(math.isfinite).all()


def test_a_configuration_trained_again_at_each_rung_counts_once_as_its_longest_run(tmp_path):
    """early_stopping="budget": a promoted configuration is stored once per rung; its short
    rung's metric is not the configuration's."""
    root = str(tmp_path)
    rows = [(f"r1-{n}", "sgd/step", "completed", 1, lr, acc, acc, 0.1) for n, (lr, acc) in
            enumerate([(0.1, 0.99), (0.2, 0.90), (0.3, 0.70)])]
    rows += [("r2-0", "sgd/step", "completed", 4, 0.1, 0.80, 0.80, 0.1)]  # 0.1 promoted, worse over 4 epochs
    write_rows(root, "trials", "digits", "sweep-a", [{**trial_row(*row), "seed": 0, "budget": row[3]} for row in rows])
    table = rank(read_frame(root, "trials")).set_index("family")
    assert table.loc["sgd/step", "trials"] == 3
    assert table.loc["sgd/step", "best_trial"] == "r1-1" and table.loc["sgd/step", "best"] == 0.90
    assert table.loc["sgd/step", "mean_top3"] == pytest.approx((0.90 + 0.80 + 0.70) / 3)


def test_trials_of_one_configuration_at_the_same_budget_each_count(tmp_path):
    """A family with fixed parameters (or a value the search draws twice) trains the same
    configuration and seed again: separate trials, each counted, an error among them too."""
    root = str(tmp_path)
    rows = [(f"c{n}", "adam/constant", status, epochs, 0.001, acc, acc, 0.1) for n, (status, epochs, acc) in
            enumerate([("completed", 10, 0.90), ("completed", 10, 0.80), ("error", 2, None)])]
    write_rows(root, "trials", "digits", "sweep-a", [{**trial_row(*row), "seed": 0, "budget": 10} for row in rows])
    table = rank(read_frame(root, "trials")).set_index("family")
    assert table.loc["adam/constant", ["trials", "full", "errors"]].tolist() == [3, 2, 1]
    assert table.loc["adam/constant", "best_trial"] == "c0" and table.loc["adam/constant", "best"] == 0.90


def test_each_dataset_is_ranked_by_its_own_sweeps_metric(tmp_path):
    """`rank` over a store where digits was swept for accuracy and ionosphere for loss."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    write_rows(root, "trials", "ionosphere", "sweep-b", [{**trial_row(*row), "metric": "val_loss", "metric_mode": "min"}
                                                         for row in IONOSPHERE])
    table = rank(read_frame(root, "trials"))
    ionosphere = table[table["dataset"] == "ionosphere"].set_index("family")
    assert set(ionosphere["metric"]) == {"final_val_loss"} and ionosphere.loc["sgd/step", "rank"] == 1
    assert set(table[table["dataset"] == "digits"]["metric"]) == {"final_val_accuracy"}
    text = format_ranking(table)
    assert "dataset ionosphere: final_val_loss per trial, lower is better" in text
    assert "dataset digits: final_val_accuracy per trial, higher is better" in text


def test_a_dataset_swept_for_two_metrics_is_ranked_by_the_more_common_one_with_a_warning(tmp_path, capsys):
    """A user swept ionosphere for accuracy, then once for loss: `rank` says which it ranks by."""
    root = str(tmp_path)
    write_rows(root, "trials", "ionosphere", "for-accuracy", [trial_row(*row) for row in IONOSPHERE])
    write_rows(root, "trials", "ionosphere", "for-loss", [{**trial_row(*row), "trial_id": f"loss-{row[0]}",
                                                            "metric": "val_loss", "metric_mode": "min"}
                                                           for row in IONOSPHERE[:1]])
    table = rank(read_frame(root, "trials"))
    assert set(table["metric"]) == {"final_val_accuracy"}
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "ionosphere" in warning and "ranked by val_accuracy" in warning
    assert f"(trials: val_accuracy {len(IONOSPHERE)}, val_loss 1)" in warning


def test_query_aggregates_over_the_latest_records(results):
    frame = query(results, "SELECT family, count(*) AS n, max(final_val_accuracy) AS top FROM trials "
                           "WHERE dataset = 'digits' GROUP BY family ORDER BY n DESC, family")
    assert list(frame["family"]) == ["step", "constant", "cosine", "plateau"]
    assert list(frame["n"]) == [5, 3, 1, 1]
    assert frame["top"].iloc[0] == pytest.approx(0.99)  # the diverged trial's value is data, not a score


def test_query_shows_the_stores_three_tables_and_nothing_of_its_own(results):
    assert query(results, "SHOW TABLES")["name"].tolist() == ["epochs", "lr_range", "trials"]


def test_query_joins_trials_and_epochs(results):
    frame = query(results, "SELECT t.trial_id, t.optimizer, max(e.epoch) AS last, sum(e.val_accuracy) AS total "
                           "FROM trials t JOIN epochs e ON e.trial_id = t.trial_id AND e.sweep = t.sweep "
                           "GROUP BY ALL ORDER BY t.trial_id")
    assert frame.to_dict("records") == [
        {"trial_id": "a1", "optimizer": "adam", "last": 2, "total": pytest.approx(1.2)},
        {"trial_id": "s1", "optimizer": "sgd", "last": 3, "total": pytest.approx(1.8)}]


def test_query_reads_the_later_columns_whichever_file_comes_first(tmp_path):
    """A sweep stored before `budget`, `gpu_ids` and `training_settings` existed, its folder
    first in the store's order: the later sweep's values are there, the earlier's null."""
    root = str(tmp_path)
    schema = SCHEMAS["trials"]
    for column in LATER_COLUMNS["trials"]:
        schema = schema.remove(schema.get_field_index(column))
    folder = tmp_path / "trials" / "dataset=digits" / "sweep=a-old"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([trial_row(*DIGITS[0])], schema=schema), folder / "part-0.parquet")
    write_rows(root, "trials", "digits", "b-new", [{**trial_row(*DIGITS[1]), "budget": 10, "gpu_ids": "0"}])
    frame = query(root, "SELECT sweep, budget, gpu_ids, training_settings FROM trials ORDER BY sweep")
    assert frame["sweep"].tolist() == ["a-old", "b-new"]
    assert frame["budget"].isna().tolist() == [True, False] and frame["budget"].iloc[1] == 10
    assert frame["gpu_ids"].tolist()[1] == "0" and frame["training_settings"].isna().all()


@pytest.mark.parametrize("sql", ["SELEC * FROM trials", "SELECT * FROM nowhere", "SELECT nothing FROM trials"])
def test_bad_sql_is_bad_input_naming_the_sql(results, sql):
    with pytest.raises(LrsweepError) as caught:
        query(results, sql)
    assert sql in str(caught.value) and "\n" not in str(caught.value)


def test_query_never_writes_and_refuses_what_is_not_one_query(tmp_path):
    """DuckDB runs COPY ... TO as readily as SELECT: it would overwrite a stored file. Only
    one reading statement runs (PIVOT, DESCRIBE and the like read); the rest, and SQL with
    no statement at all, is bad input naming the SQL, and the store is as it was."""
    root = tmp_path / "results"
    stored = write_rows(str(root), "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    before = open(stored, "rb").read()
    copy = f"COPY (SELECT 'oops' AS x) TO '{stored}' (FORMAT PARQUET)"
    attach = f"ATTACH '{tmp_path / 'other.db'}'"
    pivot_copy = f"COPY (PIVOT trials ON status USING count(*)) TO '{stored}' (FORMAT PARQUET)"  # DuckDB: MULTI
    for sql in [copy, f"SELECT 1; {copy}", "CREATE TABLE kept AS SELECT 1", attach, "", "-- a note", pivot_copy,
                f"/* pivot */ {pivot_copy}", f"EXPLAIN ANALYZE {copy}", f"explain /* plan */ analyse {copy}",
                # DuckDB's comments hold comments: the first */ does not end this one
                f"EXPLAIN ANALYZE /* /* */ SELECT 1 -- */ COPY (SELECT 42 AS x) TO '{tmp_path / 'b.csv'}'",
                f"/* /* */ SELECT */ {pivot_copy}", f"EXPLAIN (FORMAT json, ANALYZE) {copy}",
                f"EXPLAIN ANALYZE (FORMAT json) {copy}"]:
        assert_refused(lrsweep("query", sql, "--results", str(root)), "sql=", "one query that reads")
    assert open(stored, "rb").read() == before and sorted(os.listdir(tmp_path)) == ["results"]
    pivot = lrsweep("query", "PIVOT (SELECT family, status FROM trials) ON status USING count(*) ORDER BY family",
                    "--results", str(root), "--format", "csv")
    assert pivot.returncode == 0, pivot.stderr[-2000:]
    assert pivot.stdout.splitlines()[0].startswith("family,")
    assert query(str(root), "DESCRIBE trials")["column_name"].tolist()[:2] == ["trial_id", "family"]
    for explain in ("EXPLAIN", "EXPLAIN ANALYZE", "EXPLAIN /* a -- */ (", "EXPLAIN (FORMAT json)",
                    "EXPLAIN (ANALYZE, FORMAT json) ("):  # a plan, as DuckDB draws it
        plan = lrsweep("query", f"{explain} SELECT family, count(*) FROM trials GROUP BY family"
                       f"{')' if explain.endswith('(') else ''}", "--results", str(root))
        assert plan.returncode == 0 and "read_parquet" in plan.stdout.lower(), plan.stderr[-2000:]


SQL = "SELECT trial_id, status, epochs FROM trials WHERE family = 'step' AND dataset = 'digits' ORDER BY trial_id"
STEP_TRIALS = [(row[0], row[2], row[3]) for row in DIGITS if row[1] == "sgd/step"]


def test_query_command_prints_csv(results):
    ran = lrsweep("query", SQL, "--results", results, "--format", "csv")
    assert ran.returncode == 0, ran.stderr
    rows = list(csv.reader(io.StringIO(ran.stdout)))
    assert rows[0] == ["trial_id", "status", "epochs"]
    assert rows[1:] == [[t, s, str(e)] for t, s, e in STEP_TRIALS]


def test_query_json_keeps_timestamps_to_the_microsecond(tmp_path):
    root = str(tmp_path)
    started = pd.Timestamp("2026-12-04 10:00:00.123456", tz="UTC")
    write_rows(root, "trials", "digits", "s", [{**trial_row(*DIGITS[0]), "start_time": started}])
    ran = lrsweep("query", "SELECT start_time FROM trials", "--results", root, "--format", "json")
    assert ran.returncode == 0, ran.stderr
    assert pd.Timestamp(json.loads(ran.stdout)[0]["start_time"]) == started


def test_query_json_and_csv_keep_every_digit_and_every_item_of_a_list(tmp_path):
    """JSON kept ten decimals (a stored rate of 1e-12 came out 0.0, one of 1e-6 with four
    or five digits) and CSV wrote a LIST as numpy prints an array: eight digits, and `...`
    in place of all but six items of a long one."""
    root = str(tmp_path)
    rate = 0.1 / 3 * 1e-6
    write_rows(root, "trials", "digits", "s", [trial_row("t1", "adam/constant", "completed", 10, rate, 0.9, 0.9, 0.1)])
    write_rows(root, "epochs", "digits", "s", [{"trial_id": "t1", "epoch": e, "lr": rate, "loss": 1e-12 * e}
                                               for e in range(1, 1201)])
    sql = ("SELECT t.initial_lr, min(e.loss) AS tiny, list(e.loss ORDER BY e.epoch) AS losses, "
           "{'rate': t.initial_lr} AS s, ['電離層'] AS names FROM trials t JOIN epochs e USING (trial_id) GROUP BY ALL")
    ran = {fmt: lrsweep("query", sql, "--format", fmt, "--results", root) for fmt in ("json", "csv")}
    assert all(done.returncode == 0 and not done.stderr for done in ran.values()), ran
    losses = [1e-12 * e for e in range(1, 1201)]
    assert json.loads(ran["json"].stdout) == [{"initial_lr": rate, "tiny": 1e-12, "losses": losses, "s": {"rate": rate},
                                                "names": ["電離層"]}]
    row = next(csv.DictReader(io.StringIO(ran["csv"].stdout)))
    assert (float(row["initial_lr"]), float(row["tiny"])) == (rate, 1e-12)
    assert json.loads(row["losses"]) == losses and json.loads(row["s"]) == {"rate": rate}
    assert row["names"] == '["電離層"]'  # as written, as a text column's is


def test_query_command_prints_json_records(results):
    ran = lrsweep("query", SQL, "--results", results, "--format", "json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [{"trial_id": t, "status": s, "epochs": e} for t, s, e in STEP_TRIALS]


def test_query_command_prints_a_table(results):
    ran = lrsweep("query", SQL, "--results", results)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].split() == ["trial_id", "status", "epochs"]
    assert [line.split() for line in lines[1:]] == [[t, s, str(e)] for t, s, e in STEP_TRIALS]


def test_best_of_a_trial_that_failed_before_its_first_epoch_says_so(results):
    done = lrsweep("best", "--dataset", "digits", "--trial", "p1", "--results", results, timeout=120)
    assert_refused(done, "trial='p1'", "before its first epoch")


def test_rank_command_prints_the_ranking(results):
    ran = lrsweep("rank", "--results", results)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip("\n") == format_ranking(rank(read_frame(results, "trials")))
    assert ran.stdout.startswith("dataset digits: final_val_accuracy per trial, higher is better")


def test_rank_command_limits_to_one_dataset(results):
    ran = lrsweep("rank", "--results", results, "--dataset", "ionosphere", "--metric", "val_loss")
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "dataset ionosphere: final_val_loss per trial, lower is better"
    assert [line.split()[:2] for line in lines[2:]] == [["1", "sgd/step"], ["2", "adam/constant"]]


def test_families_confirmed_in_other_sweeps_than_the_leaders_say_so_and_rank_sweep_ranks_one_run(tmp_path):
    """Two runs on one dataset: step confirmed in sweep-a, cosine in sweep-b. The ranking of
    the dataset pairs runs of one sweep and seed: cosine's five runs are not "too few", they
    are not paired with the leader's. `rank --sweep` ranks one run alone, as its launch did;
    a run the store does not hold is bad input naming those it holds."""
    root = str(tmp_path)
    write_rows(root, "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    write_rows(root, "trials", "digits", "sweep-a", confirm_rows(
        [("sgd/step", seed, "completed", value) for seed, value in enumerate([0.92, 0.93, 0.94, 0.93, 0.93], 1)]))
    write_rows(root, "trials", "digits", "sweep-b", [{**trial_row(*row), "trial_id": f"b-{row[0]}"}
                                                     for row in DIGITS if row[1] == "sgd/cosine"])
    write_rows(root, "trials", "digits", "sweep-b", confirm_rows(
        [("sgd/cosine", seed, "completed", value) for seed, value in enumerate([0.90, 0.91, 0.89, 0.90, 0.92], 1)]))

    verdicts = rank(read_frame(root, "trials")).set_index("family")["vs_leader"]
    assert (verdicts["sgd/step"], verdicts["sgd/cosine"]) == ("leader", "not paired (another sweep)")
    ran = lrsweep("rank", "--results", root, "--sweep", "sweep-b")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip("\n") == format_ranking(rank(read_frame(root, "trials", sweep="sweep-b")))
    assert [line.split()[1] for line in ran.stdout.splitlines()[3:]] == ["sgd/cosine"]  # leader of its own run
    assert "leader" in ran.stdout.splitlines()[3]
    assert_refused(lrsweep("rank", "--results", root, "--sweep", "sweep-c"), "sweep='sweep-c'", "sweep-a, sweep-b")
    assert_refused(lrsweep("rank", "--results", root, "--sweep", "sweep-a", "--dataset", "mnist"),
                   "dataset='mnist'", "the store holds digits")  # the dataset is the typo


PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_and_report_draw_the_pictures_and_the_ranking(results, tmp_path):
    ran = lrsweep("plot", "--dataset", "digits", "--results", results, "--out", str(tmp_path / "pictures"))
    assert ran.returncode == 0, ran.stderr
    paths = ran.stdout.split()
    assert [p.rsplit("/", 1)[1] for p in paths] == ["rates.png", "curves.png", "ranking.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == PNG
    ran = lrsweep("report", "--dataset", "digits", "--results", results, "--out", str(tmp_path / "r" / "digits.html"))
    assert ran.returncode == 0, ran.stderr
    page = (tmp_path / "r" / "digits.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and "<table" in page
    assert all(label in page for label in ("sgd/step", "adam/constant", "sgd/cosine", "sgd/plateau"))


def test_a_family_whose_best_trial_asha_stopped_is_drawn_on_as_its_confirmation_run_trained(tmp_path):
    """The pictures draw each family's best trial: one stopped at epoch 3 of 10 showed three
    points of its schedule. Its label says where it stopped, and the rest of the line is its
    configuration's first confirmation run from there; a trial that ran to the end has none."""
    from lrsweep.results.plots import family_lines

    root = str(tmp_path)
    write_rows(root, "trials", "digits", "s", [
        trial_row("t1", "sgd/step", "early_stopped", 3, 0.1, 0.9, 0.9, 0.2),
        trial_row("a1", "adam/constant", "completed", MAX_EPOCHS, 0.001, 0.8, 0.8, 0.3),
        *confirm_rows([("sgd/step", seed, "completed", 0.9) for seed in (2, 1)])])
    rates = {"t1": [0.1] * 3, "a1": [0.001] * MAX_EPOCHS, "sgd/step-1": [0.1] * 5 + [0.05] * 5,
             "sgd/step-2": [0.2] * MAX_EPOCHS}
    write_rows(root, "epochs", "digits", "s", [{"trial_id": trial_id, "epoch": e, "lr": lr}
                                               for trial_id, trace in rates.items()
                                               for e, lr in enumerate(trace, 1)])
    trials = read_frame(root, "trials")
    lines = family_lines(trials, rank(trials), read_frame(root, "epochs"), "lr")
    (step, (x, y), rest), (adam, _, none) = lines
    assert step == f"sgd/step (stopped at epoch 3 of {MAX_EPOCHS})" and list(x) == [1, 2, 3]
    assert list(rest[0]) == list(range(3, MAX_EPOCHS + 1))  # from the epoch it stopped at, of seed 1
    assert list(rest[1]) == [0.1] * 3 + [0.05] * 5
    assert adam == "adam/constant" and none is None
    from lrsweep.results.plots import sweep_report

    sweep_report(root, "digits", str(tmp_path / "digits.html"))  # its table: the ranking's columns, as printed
    assert "confirm_mean" in (tmp_path / "digits.html").read_text()
    assert "confirmed_trials" not in (tmp_path / "digits.html").read_text()


@pytest.mark.parametrize("command, out", [("plot", "pictures"), ("report", "report.html"), ("best", None),
                                          ("fit-schedule", None)])
def test_a_dataset_whose_trials_all_diverged_or_failed_has_nothing_to_draw_or_take(tmp_path, command, out):
    """plot and report stopped on a matplotlib traceback (a NaN axis limit) after writing
    two of the pictures; like best and fit-schedule they say in one line that no trial
    ended with a result, and write nothing."""
    root = tmp_path / "results"
    write_rows(str(root), "trials", "digits", "sweep-a", [
        trial_row("d1", "sgd/step", "diverged", 2, 5.0, 0.1, 0.3, math.nan),
        trial_row("e1", "sgd/cosine", "error", 0, 0.1, None, None, None)])
    write_rows(str(root), "epochs", "digits", "sweep-a", [
        {"trial_id": "d1", "epoch": e, "lr": 5.0, "val_accuracy": 0.1, "loss": math.nan} for e in (1, 2)])
    output = ["--out", str(tmp_path / out)] if out else []
    done = lrsweep(command, "--dataset", "digits", "--results", str(root), *output, timeout=120)
    assert_refused(done, "No trial on dataset 'digits' ended with a result", "dataset='digits'")
    assert sorted(os.listdir(tmp_path)) == ["results"]


# What `best` reads of a trial besides trial_row's columns.
FIT = {"steps_per_epoch": 10, "granularity": "epoch", "batch_size": 32, "optimizer_args": "{}"}


@pytest.mark.parametrize("label", ["sgd/constant", "sgd/plateau"])
def test_best_gives_a_rate_without_a_schedule_as_it_was_drawn(tmp_path, label):
    """Keras serializes a plain rate from its float32 variable: 0.1 came out as
    0.10000000149011612 in the JSON and the snippet."""
    root = tmp_path / "results"
    row = {**trial_row("c1", "sgd/step", "completed", 10, 0.1, 0.9, 0.9, 0.1), **FIT}
    row.update(family=label.split("/")[1], params=json.dumps({**FAMILY_PARAMS.get(label, {}), "initial_lr": 0.1}))
    write_rows(str(root), "trials", "digits", "sweep-a", [row])
    shown = lrsweep("best", "--dataset", "digits", "--results", str(root), timeout=120)
    snippet = lrsweep("best", "--dataset", "digits", "--results", str(root), "--python", timeout=120)
    assert shown.returncode == 0 and snippet.returncode == 0, shown.stderr[-2000:] + snippet.stderr[-2000:]
    assert json.loads(shown.stdout)["optimizer"]["config"]["learning_rate"] == 0.1
    assert "keras.optimizers.SGD(learning_rate=0.1," in snippet.stdout


def test_best_says_how_far_its_trial_trained_and_what_its_confirmation_runs_reached(tmp_path):
    """The best family's best trial was stopped early (ASHA, at epoch 3 of 10): the value
    beside it is epoch 3's. `best` says so, and gives the mean of the runs that trained
    its configuration to the end with other seeds, which is what made it the best."""
    root = str(tmp_path / "results")
    write_rows(root, "trials", "digits", "sweep-a", [
        {**trial_row("t1", "sgd/step", "early_stopped", 3, 0.1, 0.85, 0.85, 0.3), **FIT},
        {**trial_row("a1", "adam/constant", "completed", MAX_EPOCHS, 0.001, 0.90, 0.90, 0.2), **FIT},
        *confirm_rows([("sgd/step", seed, "completed", value) for seed, value in ((1, 0.92), (2, 0.94))]),
        *[{**row, "params": json.dumps({"initial_lr": 0.001})}
          for row in confirm_rows([("adam/constant", seed, "completed", 0.88) for seed in (1, 2)])]])
    shown = lrsweep("best", "--dataset", "digits", "--results", root, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    best = json.loads(shown.stdout)
    assert best["trial_id"] == "t1" and best["val_accuracy"] == pytest.approx(0.85)
    assert best["epochs_trained"] == 3 and best["status"] == "early_stopped" and best["fit"]["epochs"] == MAX_EPOCHS
    assert best["confirmed"]["metric"] == "final_val_accuracy" and best["confirmed"]["runs"] == 2
    assert best["confirmed"]["mean"] == pytest.approx(0.93)
    assert best["confirmed"]["ci95"] == pytest.approx(12.7062 * 0.01, rel=1e-3)  # t(0.975, 1) * sd / sqrt(2)
    snippet = lrsweep("best", "--dataset", "digits", "--results", root, "--python", timeout=120).stdout
    assert (f"# val_accuracy 0.8500 after 3 of {MAX_EPOCHS} epochs (early_stopped); trained again to {MAX_EPOCHS} "
            f"epochs with 2 other seeds: final_val_accuracy 0.9300 ± ") in snippet
    # another sweep's runs of the family, of another configuration, are not a1's
    write_rows(root, "trials", "digits", "sweep-b", [
        {**trial_row("b1", "adam/constant", "completed", MAX_EPOCHS, 0.01, 0.70, 0.70, 0.5), **FIT},
        *[{**row, "params": json.dumps({"initial_lr": 0.01})}
          for row in confirm_rows([("adam/constant", seed, "completed", 0.5) for seed in (1, 2)])]])
    own = json.loads(lrsweep("best", "--dataset", "digits", "--trial", "a1", "--results", root, timeout=120).stdout)
    assert own["confirmed"]["runs"] == 2 and own["confirmed"]["mean"] == pytest.approx(0.88)


def test_best_of_a_diverged_trial_is_json_a_strict_parser_reads(tmp_path):
    """A diverged trial's loss is infinite: `best --trial` printed `Infinity`, which JSON
    does not have; it is null, as a NaN already was."""
    root = tmp_path / "results"
    row = {**trial_row("d1", "sgd/step", "diverged", 2, 5.0, 0.1, 0.3, math.inf), "metric": "val_loss",
           "metric_mode": "min", **FIT}
    write_rows(str(root), "trials", "digits", "sweep-a", [row])
    done = lrsweep("best", "--dataset", "digits", "--trial", "d1", "--results", str(root), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(done.stdout, parse_constant=refuse)["val_loss"] is None


@pytest.mark.parametrize("args, named", [
    # a dataset the store does not hold: one line naming those it does
    (["plot", "--dataset", "mnist", "--out", "/tmp/unused"], "dataset='mnist' (the store holds digits, ionosphere)"),
    (["report", "--dataset", "mnist", "--out", "/tmp/unused.html"], "dataset='mnist' (the store holds digits, "),
    (["rank", "--dataset", "digit"], "dataset='digit' (the store holds digits, ionosphere)"),
    (["best", "--dataset", "mnist"], "dataset='mnist' (the store holds digits, ionosphere)"),
    (["query", SQL, "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    (["query", "SELEC 1"], "sql='SELEC 1'"),
    (["rank", "--metric", "f1"], "metric='f1'"),
])
def test_bad_input_exits_2_with_one_line(results, args, named):
    assert_refused(lrsweep(*args, "--results", results), named)


def test_query_answers_past_a_file_whose_data_is_damaged(tmp_path, capsys):
    """A footer that reads but data that does not: skipped with one warning, never deleted."""
    root = str(tmp_path)
    write_rows(root, "epochs", "digits", "s", [{"trial_id": "a", "epoch": e, "lr": 0.1} for e in (1, 2)])
    damaged = write_rows(root, "epochs", "digits", "s", [{"trial_id": "b", "epoch": e, "lr": 0.1} for e in (1, 2)])
    raw = bytearray(open(damaged, "rb").read())
    raw[8:300] = b"\xff" * 292
    open(damaged, "wb").write(bytes(raw))
    frame = query(root, "SELECT trial_id, count(*) AS n FROM epochs GROUP BY trial_id")
    assert frame.to_dict("records") == [{"trial_id": "a", "n": 2}]
    warnings = [line for line in capsys.readouterr().err.splitlines() if damaged in line]
    assert len(warnings) == 1
    assert open(damaged, "rb").read() == bytes(raw)


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                    reason="root lists any folder, and setpriv is not there to take that from it")
def test_a_folder_that_cannot_be_listed_is_skipped_with_one_warning(tmp_path):
    """`rank` and `query` answer from the rest of the store (as root, run without the
    capability that reads any folder)."""
    write_rows(str(tmp_path), "trials", "digits", "s1", [trial_row(*row) for row in DIGITS])
    write_rows(str(tmp_path), "trials", "ionosphere", "s2", [trial_row(*row) for row in IONOSPHERE])
    locked = tmp_path / "trials" / "dataset=ionosphere" / "sweep=s2"
    locked.chmod(0)
    foreign = tmp_path / "trials" / "junk"  # a folder of another tool's, which is never read: named once (was twice)
    foreign.mkdir()
    foreign.chmod(0)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        for args in (["rank"], ["query", "SELECT dataset, count(*) AS n FROM trials GROUP BY 1"]):
            done = subprocess.run([*prefix, sys.executable, "-m", "lrsweep", *args, "--results", str(tmp_path)],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            assert sorted(done.stderr.splitlines()) == [
                f"lrsweep: warning: skipping {locked}: cannot be listed "
                f"({done.stderr.split('cannot be listed (')[1].splitlines()[0]}",
                f"lrsweep: warning: skipping {foreign}: not a folder of the trials table (nothing in it is read)"]
            assert "digits" in done.stdout and "ionosphere" not in done.stdout, done.stdout
        foreign.chmod(0o755)
        # a table's own folder: skipped the same way; a query of another table is answered (it
        # failed every query with "Cannot list the store's folder", exit 2)
        write_rows(str(tmp_path), "lr_range", "digits", "s1", [{"optimizer": "sgd", "step": 1, "lr": 0.1, "loss": 2.0,
                                                                "smoothed_loss": 2.0}])
        table = tmp_path / "trials"
        table.chmod(0)
        for args, answer in ((["rank"], "no trials in the store"),
                             (["query", "SELECT count(*) AS n FROM trials"], "0"),
                             (["query", "SELECT optimizer, lr FROM lr_range"], "sgd 0.1")):
            done = subprocess.run([*prefix, sys.executable, "-m", "lrsweep", *args, "--results", str(tmp_path)],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            assert done.stderr.startswith(f"lrsweep: warning: skipping {table}: cannot be listed ("), done.stderr
            assert len(done.stderr.splitlines()) == 1, done.stderr
            assert answer in " ".join(done.stdout.split()), done.stdout
    finally:
        locked.chmod(0o755)
        foreign.chmod(0o755)
        (tmp_path / "trials").chmod(0o755)


def test_a_metric_that_does_not_exist_is_refused_before_the_store_is_read(tmp_path):
    """`rank --metric f1` on an empty store said "no trials in the store" and exit 0, and on a
    store with a foreign file gave its warning before the error line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused(lrsweep("rank", "--metric", "f1", "--results", str(empty)), "metric='f1'")
    root = tmp_path / "results"
    write_rows(str(root), "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    (root / "trials" / "dataset=digits" / "notes.txt").write_text("x")
    for args, word in ((["rank", "--metric", "f1"], "f1"), (["rank", "--dataset", "mnist"], "mnist"),
                       (["best", "--dataset", "mnist"], "mnist"), (["best", "--dataset", "digits", "--trial", "nope"],
                                                                   "nope"),
                       # these four gave the warning, then the error line
                       (["query", "SELECT nope FROM trials"], "nope"), (["fit-schedule", "--dataset", "mnist"], "mnist"),
                       (["plot", "--dataset", "mnist", "--out", str(tmp_path / "p")], "mnist"),
                       (["report", "--dataset", "mnist", "--out", str(tmp_path / "r.html")], "mnist")):
        assert_refused(lrsweep(*args, "--results", str(root)), word)
    ranked = lrsweep("rank", "--results", str(root))  # taken: the warning comes
    assert ranked.returncode == 0 and "skipping" in ranked.stderr and "notes.txt" in ranked.stderr


def test_rank_of_a_folder_that_is_no_store_says_so(tmp_path):
    """`rank --results` naming a folder that holds no store (its parent, a folder with other
    files) said only "no trials in the store", as if the runs in it had gone."""
    (tmp_path / "notes.txt").write_text("x")
    ranked = lrsweep("rank", "--results", str(tmp_path))
    assert (ranked.returncode, ranked.stderr) == (0, "")
    assert ranked.stdout.startswith(f"no trials in the store: {tmp_path} holds no trials/ folder"), ranked.stdout
    (tmp_path / "tune" / "run-1").mkdir(parents=True)  # a store whose one launch stopped before a trial ended
    ranked = lrsweep("rank", "--results", str(tmp_path))
    assert ranked.stdout == f"no trials in the store: no trial stored in {tmp_path} has ended yet\n", ranked.stdout
    write_rows(str(tmp_path), "trials", "digits", "sweep-a", [trial_row(*row) for row in DIGITS])
    assert "digits" in lrsweep("rank", "--results", str(tmp_path)).stdout


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                    reason="root writes into any folder, and setpriv is not there to take that from it")
def test_an_out_that_cannot_be_written_is_refused_before_the_store_is_read(results, tmp_path):
    """`report --out` (and `plot`'s) in a folder this user cannot write ended in a
    PermissionError traceback after reading the store; `--out=~/...`, where the shell leaves
    the ~ alone, wrote into a folder named ~."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    for args in (["report", "--out", str(locked / "r.html")], ["plot", "--out", str(locked / "pictures")]):
        done = subprocess.run([*prefix, sys.executable, "-m", "lrsweep", *args, "--dataset", "digits", "--results",
                               results], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert_refused(done, "--out", str(locked), "not writable")
    home = tmp_path / "home"
    home.mkdir()
    done = lrsweep("report", "--dataset", "digits", "--results", results, "--out=~/r.html", env={"HOME": str(home)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (home / "r.html").exists() and not (pathlib.Path(REPO) / "~").exists()


def test_an_out_inside_the_stores_folders_is_refused_and_nothing_stored_is_touched(tmp_path):
    """`report --out` on a stored file wrote the page over it (its trials lost); `plot --out`
    or `find-lr --plot` inside a table's folders left pictures where `pandas.read_parquet` of
    the table fails on them. The results folder's own level is not read: a report may go there."""
    root = tmp_path / "results"
    stored = write_rows(str(root), "trials", "digits", "s1", [trial_row(*row) for row in DIGITS])
    before = open(stored, "rb").read()
    partition = os.path.dirname(stored)
    for args, flag in ((["report", "--dataset", "digits", "--out", stored], "out"),
                       (["plot", "--dataset", "digits", "--out", partition], "out"),
                       (["plot", "--dataset", "digits", "--out", str(root / "tune" / "pictures")], "out"),
                       (["find-lr", "sweeps/digits.py", "--plot", str(root / "lr_range" / "range.png")], "plot")):
        assert_refused(lrsweep(*args, "--results", str(root)), f"`{flag}`", "outside the store's folder")
    assert open(stored, "rb").read() == before and os.listdir(partition) == [os.path.basename(stored)]
    assert sorted(os.listdir(root)) == ["trials"]
    done = lrsweep("report", "--dataset", "digits", "--out", str(root / "report.html"), "--results", str(root))
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(pd.read_parquet(root / "trials")) == len(DIGITS)


def test_a_dataset_whose_every_file_is_unreadable_names_them_with_the_error(tmp_path):
    """Bad input is one line, but where the skipped files are why the store holds no trial
    of the dataset (or run), their warnings come first: the error alone named none."""
    root = tmp_path / "results"
    write_rows(str(root), "trials", "digits", "s1", [trial_row(*row) for row in DIGITS])
    broken = write_rows(str(root), "trials", "ionosphere", "s2", [trial_row(*row) for row in IONOSPHERE])
    open(broken, "r+b").truncate(100)
    (root / "trials" / "dataset=digits" / "notes.txt").write_text("x")  # its warning is not the error's cause: held
    for args in (["rank", "--dataset", "ionosphere"], ["best", "--dataset", "ionosphere"],
                 ["rank", "--sweep", "s2"]):
        done = lrsweep(*args, "--results", str(root))
        lines = done.stderr.splitlines()
        assert done.returncode == 2 and len(lines) == 2, done.stderr
        assert lines[0].startswith(f"lrsweep: warning: skipping {broken}: not a readable Parquet file"), lines
        assert lines[1].startswith("lrsweep: error:") and "its files hold no readable trial" in lines[1], lines
    assert os.path.getsize(broken) == 100


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                    reason="root lists any folder, and setpriv is not there to take that from it")
def test_a_dataset_whose_folder_cannot_be_listed_names_it_with_the_error(tmp_path):
    """The warning names the folder itself (no `/` after it): it was held and dropped."""
    root = tmp_path / "results"
    write_rows(str(root), "trials", "digits", "s1", [trial_row(*row) for row in DIGITS])
    write_rows(str(root), "trials", "ionosphere", "s2", [trial_row(*row) for row in IONOSPHERE])
    locked = root / "trials" / "dataset=ionosphere"
    locked.chmod(0)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "lrsweep", "rank", "--dataset", "ionosphere", "--results",
                               str(root)], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 2, done.stderr
    assert lines[0].startswith(f"lrsweep: warning: skipping {locked}: cannot be listed"), lines
    assert "its files hold no readable trial" in lines[1], lines


def test_a_file_named_like_a_partition_is_foreign_and_never_read_as_a_folder(tmp_path):
    """A file `trials/dataset=x.csv` broke the error naming the runs the store holds
    ("Cannot list ... Not a directory") and was listed as a dataset."""
    root = tmp_path / "results"
    write_rows(str(root), "trials", "digits", "s1", [trial_row(*row) for row in DIGITS])
    (root / "trials" / "dataset=x.csv").write_text("a,b\n")
    (root / "trials" / "dataset=digits" / "sweep=notes.txt").write_text("x")
    assert_refused(lrsweep("rank", "--sweep", "nosuch", "--results", str(root)), "(it holds s1)")
    assert_refused(lrsweep("rank", "--dataset", "nosuch", "--results", str(root)), "(the store holds digits)")
    done = lrsweep("rank", "--results", str(root))
    assert done.returncode == 0 and "digits" in done.stdout, done.stderr[-2000:]
    assert [line.split(": ")[2] for line in done.stderr.splitlines()] == [
        f"skipping {root / 'trials' / 'dataset=digits' / 'sweep=notes.txt'}",
        f"skipping {root / 'trials' / 'dataset=x.csv'}"]


def test_query_writes_a_blob_and_a_uuid_as_text_in_every_format(tmp_path):
    """JSON gave `{}` for a BLOB and failed on a UUID (a traceback); a table showed
    `bytearray(b'...')`. Both as DuckDB writes them."""
    uid = "12345678-1234-5678-1234-567812345678"
    sql = (f"SELECT '{uid}'::UUID AS u, '\\xAA\\x01a\\x5Cb'::BLOB AS b, 1 AS n, ['{uid}'::UUID] AS l, "
           "('\\xAA\\x01a\\x5Cb'::BLOB)::VARCHAR AS duckdb, [1.5, NULL] AS m, "  # a NULL in a LIST: a traceback
           "[TIMESTAMP_NS '2020-01-01 00:00:00.123456789', NULL] AS t")
    answers = {fmt: lrsweep("query", sql, "--format", fmt, "--results", str(tmp_path)) for fmt in ("json", "csv", "table")}
    assert all(done.returncode == 0 and not done.stderr for done in answers.values()), answers
    blob = "\\xAA\\x01a\\x5Cb"
    record = json.loads(answers["json"].stdout)[0]
    assert {k: v for k, v in record.items() if k != "t"} == {"u": uid, "b": blob, "n": 1, "l": [uid], "duckdb": blob,
                                                             "m": [1.5, None]}  # the NULL was 0.0 before
    assert record["t"][0].startswith("2020-01-01T00:00:00.123456") and record["t"][1] is None  # not nanoseconds
    assert answers["csv"].stdout.splitlines()[1].startswith(f'{uid},{blob},1,"[""{uid}""]",{blob},"[1.5, null]"')
    assert answers["table"].stdout.splitlines()[1].split()[:7] == [uid, blob, "1", f"[{uid}]", blob, "[1.5,", "None]"]


def test_a_query_over_a_store_below_a_key_value_folder_reads_its_own_partitions(results, tmp_path):
    """DuckDB takes every key=value folder of a file's path as a partition column: a store
    kept under /data/dataset=mnist/ read every trial as mnist's."""
    below = tmp_path / "dataset=mnist" / "sweep=old" / "store"
    shutil.copytree(results, below)
    sql = "SELECT dataset, sweep, count(*) AS n FROM trials GROUP BY ALL ORDER BY ALL"
    assert query(str(below), sql).to_dict("records") == query(results, sql).to_dict("records")


def test_the_ranking_picture_shows_each_confirmation_interval_whole():
    """ranking.png's x-axis took the best values and the confirmation means only: the
    leader's 95% interval ran off the picture."""
    from lrsweep.results.plots import ranking_limits

    table = pd.DataFrame({"best": [0.90, 0.88], "confirm_mean": [0.89, 0.87], "ci95": [0.05, math.inf]})
    low, high = ranking_limits(table)
    assert low < 0.84 and high > 0.94
    assert ranking_limits(pd.DataFrame({"best": [math.nan]})) is None
