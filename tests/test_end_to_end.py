"""Real sweeps through Ray: real Keras training, real Parquet read back.

The in-process sweeps share the session's Ray (`ray_session`); the command-line sweep joins
it as a Ray job's entrypoint would (RAY_ADDRESS), and the sweep-file tests with `--address`,
as a user's second sweep on a running cluster would.
"""

import dataclasses
import glob
import json
import math
import os
import pathlib
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from lrsweep import Choice, Range, Sweep
from lrsweep.results.rank import rank
from lrsweep.results.store import read_frame, write_rows
from lrsweep.run.driver import _damaged_tune_state, launch, promoted_configs
from lrsweep.sweep.spec import load_sweep
from tests.conftest import (REPO, TEST_DATA, assert_refused, lrsweep, lrsweep_read_until, processes, trainers,
                            tune_finished, tune_trials, wait_for, waiting_launch_warning)
from tests.reference import rate

ONE_PER_FAMILY = [
    {"family": "constant", "initial_lr": 0.05},
    {"family": "time_based", "initial_lr": 0.1, "decay": 0.5},
    {"family": "step", "initial_lr": 0.1, "drop": 0.5, "epochs_drop": 2},
    {"family": "exponential", "initial_lr": 0.1, "k": 0.3},
    {"family": "polynomial", "initial_lr": 0.1, "power": 2.0},
    {"family": "cosine", "initial_lr": 0.1, "warmup_epochs": 1},
    {"family": "cyclical", "base_lr": 0.01, "max_lr": 0.1, "step_size": 1, "mode": "triangular2"},
    {"family": "one_cycle", "max_lr": 0.1},
    {"family": "plateau", "initial_lr": 0.1, "factor": 0.5, "patience": 1},
    {"family": "adam", "initial_lr": 0.003},
]
STATUSES = {"completed", "early_stopped", "diverged"}


def expected_rates(trial):
    """The SPEC's formula for a stored trial, at the start of each of its epochs; a rung of
    early_stopping="budget" runs the whole schedule through in its `budget` epochs."""
    params, epochs = json.loads(trial["params"]), trial["max_epochs"]
    over = trial["budget"] if pd.notna(trial.get("budget")) else epochs
    stretch = (lambda e: e * epochs / over) if trial["granularity"] == "step" else (lambda e: e * epochs // over)
    return [rate(trial["family"], params, stretch(e), epochs) for e in range(int(trial["epochs"]))]


def check_lr_column(trials, epochs):
    for _, trial in trials.iterrows():
        lrs = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")["lr"].to_numpy()
        if trial["family"] == "plateau":  # Keras' ReduceLROnPlateau decides: steps of `factor`, never up
            params = json.loads(trial["params"])
            assert lrs[0] == pytest.approx(params["initial_lr"], rel=1e-6)
            assert np.all(np.diff(lrs) <= 1e-12)
            powers = np.log(lrs / params["initial_lr"]) / np.log(params["factor"])
            np.testing.assert_allclose(powers, np.round(powers), atol=1e-4)
        else:
            np.testing.assert_allclose(lrs, expected_rates(trial), rtol=1e-5, err_msg=trial["family"])


def test_every_family_trains_and_stores_the_rate_in_effect(ray_session, tmp_path):
    sweep = Sweep(name="families", dataset="digits", subsample=500, configs=ONE_PER_FAMILY, max_epochs=4,
                  early_stopping=None, results=str(tmp_path))
    name, dataset, status = launch(sweep, print_fn=lambda line: None)
    assert status == 0 and dataset == "digits"

    trials = pd.read_parquet(tmp_path / "trials")
    epochs = pd.read_parquet(tmp_path / "epochs")
    assert sorted(trials["optimizer"] + "/" + trials["family"]) == sorted(
        ["sgd/" + c["family"] for c in ONE_PER_FAMILY[:-1]] + ["adam/constant"])
    assert set(trials["status"]) == {"completed"}
    assert trials["gpu_ids"].isna().all()  # the session's Ray has a GPU: CPU trials get none of it
    assert (trials["epochs"] == 4).all() and (trials["sweep"] == name).all()
    # one row per trial and epoch, epochs 1-based
    assert len(epochs) == 4 * len(ONE_PER_FAMILY)
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert sorted(epochs["epoch"].unique()) == [1, 2, 3, 4]
    check_lr_column(trials, epochs)
    # trials learn: validation accuracy of the step-decay trial far above chance
    assert trials.loc[trials["family"] == "step", "final_val_accuracy"].iloc[0] > 0.5
    # parameters of other families are null, not missing
    assert trials.loc[trials["family"] == "step", "k"].isna().all()
    assert trials.loc[trials["family"] == "plateau", "min_lr"].iloc[0] == 0.0


def test_per_step_granularity_stores_the_rate_at_each_epochs_first_step(ray_session, tmp_path):
    configs = [{"family": f, "initial_lr": 0.1, **extra}
               for f, extra in [("cosine", {}), ("polynomial", {"power": 1.0}), ("exponential", {"k": 0.5})]]
    sweep = Sweep(name="steps", dataset="digits", subsample=300, configs=configs, max_epochs=3,
                  early_stopping=None, granularity="step", batch_size=64, results=str(tmp_path))
    assert launch(sweep, print_fn=lambda line: None)[2] == 0
    trials, epochs = pd.read_parquet(tmp_path / "trials"), pd.read_parquet(tmp_path / "epochs")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"} and (trials["epochs"] == 3).all()
    assert (trials["granularity"] == "step").all()
    check_lr_column(trials, epochs)
    # the rate moving within each epoch trains otherwise than one held for the epoch
    by_epoch = dataclasses.replace(sweep, name="epochs", granularity="epoch", results=str(tmp_path / "by-epoch"))
    assert launch(by_epoch, print_fn=lambda line: None)[2] == 0
    held = pd.read_parquet(tmp_path / "by-epoch" / "trials").set_index("family")["final_loss"]
    moving = trials.set_index("family")["final_loss"]
    assert (moving != held[moving.index]).all()


def test_search_with_early_stopping(ray_session, tmp_path):
    """An Optuna search over a conditional space, with ASHA stopping the poor trials early."""
    sweep = Sweep(name="search", dataset="digits", subsample=400, max_epochs=4, num_samples=8, grace_period=1,
                  confirm_seeds=0,
                  reduction_factor=2, results=str(tmp_path),
                  families={"step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": Range(0.2, 0.8),
                                     "epochs_drop": Choice(1, 2)},
                            "exponential": {"initial_lr": Range(0.01, 0.5, log=True), "k": Range(0.05, 0.5)},
                            "adam": {"initial_lr": Range(1e-4, 1e-2, log=True)}})
    lines = []
    name, _, status = launch(sweep, print_fn=lines.append)
    assert status == 0
    trials, epochs = pd.read_parquet(tmp_path / "trials"), pd.read_parquet(tmp_path / "epochs")
    assert len(trials) == 8 and set(trials["status"]) <= STATUSES
    assert "early_stopped" in set(trials["status"]) and "completed" in set(trials["status"])
    assert len(set(trials["optimizer"] + "/" + trials["family"])) >= 2
    check_lr_column(trials, epochs)
    # every epoch of a trial stopped early is stored, and no more
    counts = epochs.groupby("trial_id").size()
    assert (counts[trials["trial_id"]].to_numpy() == trials["epochs"].to_numpy()).all()
    assert len([line for line in lines if "/8 " in line]) == 8  # progress: a line per trial


def test_a_grace_period_as_long_as_the_trials_stops_none_of_them(ray_session, tmp_path):
    """`--max-epochs 1` on the default sweep file (ASHA's grace period 2, a cosine warm-up of
    2 epochs among its choices): a quick trial run of the file, every trial to its one epoch
    (Ray's ASHA refuses a grace period beyond max_t)."""
    sweep = dataclasses.replace(load_sweep(os.path.join(REPO, "sweeps", "digits.py")), subsample=200)
    sweep = sweep.with_overrides(max_epochs=1, num_samples=6, confirm_seeds=0, results=str(tmp_path))
    assert launch(sweep, print_fn=lambda line: None)[2] == 0
    trials = pd.read_parquet(tmp_path / "trials")
    assert len(trials) == 6 and (trials["status"] == "completed").all() and (trials["epochs"] == 1).all()


def most_at_once(trials):
    """The most trials of `trials` (a store's rows) that trained at the same time."""
    events = sorted([(t, 1) for t in trials["start_time"]] + [(t, -1) for t in trials["end_time"]])
    return max(np.cumsum([step for _, step in events]))


def test_short_trials_train_two_at_a_time_on_two_cpus(ray_session, tmp_path):
    """Trials that end sooner than a Tune actor starts (about 1 s) still fill both CPUs.
    Tune hands an ended trial's actor to the next trial and removes the actor that trial
    was waiting for: on Tune's own order (the oldest trial first) the second slot's actor
    was removed before it could start, again and again, and the sweep trained one trial
    at a time to its end (in 4 of 6 runs of this test, one of its launches or more).
    Back-to-back launches in one process, as a service runs them."""
    configs = [{"family": "constant", "initial_lr": float(lr)} for lr in np.geomspace(1e-3, 0.5, 40)]
    for k in range(3):
        sweep = Sweep(name=f"short-{k}", dataset="digits", subsample=200, model_args={"hidden": (8,)},
                      batch_size=64, max_epochs=1, early_stopping=None, configs=configs, results=str(tmp_path))
        assert launch(sweep, print_fn=lambda line: None)[2] == 0
    trials = pd.read_parquet(tmp_path / "trials")
    assert len(trials) == 120
    assert {sweep: most_at_once(group) for sweep, group in trials.groupby("sweep")} == {
        name: 2 for name in trials["sweep"].unique()}


def test_budget_early_stopping_trains_each_rungs_best_again_from_scratch(ray_session, tmp_path):
    """early_stopping="budget" (SPEC): 6 trials of 1 epoch, the best 3 again from scratch
    for 2 epochs, the best of those for all 4; each with the whole schedule fitted to its
    epochs, so a slow decay is judged on its whole curve."""
    sweep = Sweep(name="budget", dataset="digits", subsample=300, max_epochs=4, num_samples=6, grace_period=1,
                  reduction_factor=2, early_stopping="budget", confirm_seeds=0, results=str(tmp_path),
                  families={"step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": 0.5, "epochs_drop": 2},
                            "cosine": {"initial_lr": Range(0.01, 0.5, log=True)}})
    assert sweep.budgets == [(1, 6), (2, 3), (4, 1)]
    lines = []
    _, _, status = launch(sweep, print_fn=lines.append)
    assert status == 0
    trials, epochs = pd.read_parquet(tmp_path / "trials"), pd.read_parquet(tmp_path / "epochs")
    assert trials.groupby("budget").size().to_dict() == {1: 6, 2: 3, 4: 1}
    assert (trials["epochs"] == trials["budget"]).all() and set(trials["status"]) == {"completed"}
    check_lr_column(trials, epochs)
    for budget, promoted_to in ((1, 2), (2, 4)):
        rung, next_rung = trials[trials["budget"] == budget], trials[trials["budget"] == promoted_to]
        picked = rung["params"].isin(next_rung["params"])  # the same configuration, trained again
        assert picked.sum() == len(next_rung) and set(next_rung["seed"]) == {0}
        assert rung[picked]["final_val_accuracy"].min() >= rung[~picked]["final_val_accuracy"].max()
    assert rank(trials)["trials"].sum() == 6  # a configuration counts once, as its longest run
    assert [line for line in lines if line.startswith("rung ")] == [
        "rung 2 of 3: the best 3 again from scratch, the schedule fitted to 2 epochs",
        "rung 3 of 3: the best 1 again from scratch, the schedule fitted to 4 epochs"]


def test_a_configuration_drawn_twice_goes_on_to_the_next_rung_once(tmp_path):
    """A family of fixed parameters draws one configuration every time it is chosen, and it
    trains the same way each time (same seed): promoting the copies trained it again and
    again at the next rung in place of the next best configurations."""
    sweep = Sweep(name="budget", dataset="digits", max_epochs=4, num_samples=5, grace_period=1, reduction_factor=2,
                  early_stopping="budget", confirm_seeds=0, results=str(tmp_path),
                  families={"step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": 0.5, "epochs_drop": 2},
                            "adam": {"initial_lr": 0.001}})

    def trial(trial_id, family, lr, value):
        params = {"initial_lr": lr, **({"drop": 0.5, "epochs_drop": 2} if family == "step" else {})}
        return {"trial_id": trial_id, "family": "constant" if family == "adam" else family,
                "optimizer": "adam" if family == "adam" else "sgd", "params": json.dumps(params, sort_keys=True),
                "seed": 0, "stage": "search", "status": "completed", "budget": 1, "final_val_accuracy": value}

    write_rows(str(tmp_path), "trials", "digits", "run", [
        trial("a1", "adam", 0.001, 0.9), trial("a2", "adam", 0.001, 0.9), trial("a3", "adam", 0.001, 0.9),
        trial("s1", "step", 0.1, 0.8), trial("s2", "step", 0.2, 0.7)])
    promoted = promoted_configs(sweep, "run", "digits", 1, 2, 2)
    assert [(config["family"], config["budget"]) for config in promoted] == [("adam/constant", 2), ("sgd/step", 2)]
    assert promoted[1]["sgd"]["step"]["initial_lr"] == 0.1  # the next best, not a2


def test_confirmation_trains_each_familys_best_again_with_the_same_seeds(ray_session, tmp_path):
    sweep = Sweep(name="confirm", dataset="digits", subsample=300, max_epochs=3, num_samples=4, grace_period=1,
                  confirm_seeds=2, results=str(tmp_path),
                  families={"step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": 0.5, "epochs_drop": 1},
                            "adam": {"initial_lr": Range(1e-3, 1e-2, log=True)}})
    lines = []
    _, _, status = launch(sweep, print_fn=lines.append)
    assert status == 0
    trials = pd.read_parquet(tmp_path / "trials")
    search, confirm = trials[trials["stage"] == "search"], trials[trials["stage"] == "confirm"]
    assert len(search) == 4
    table = rank(search).set_index("family")
    for label, runs in confirm.groupby(confirm["optimizer"] + "/" + confirm["family"]):
        best = search[search["trial_id"] == table.loc[label, "best_trial"]].iloc[0]
        assert sorted(runs["seed"]) == [1, 2]  # the sweep's seed (0) + 1, + 2, for every family
        assert (runs["params"] == best["params"]).all()
        assert (runs["epochs"] == 3).all() and set(runs["status"]) == {"completed"}  # never stopped early
    assert len(confirm) == 2 * len(table)
    ranked = rank(trials)
    assert (ranked["confirmed"] == 2).all() and list(ranked["vs_leader"]).count("leader") == 1
    assert any(line.startswith("confirming:") for line in lines)


def test_a_search_of_fewer_configurations_than_num_samples_trains_each_once_and_confirms(ray_session, tmp_path):
    """Adam at a fixed rate (a baseline) and step decay of one choice: three configurations.
    The search trains each once, not num_samples trials of copies, and goes on to confirm."""
    sweep = Sweep(name="few", dataset="digits", subsample=300, max_epochs=2, num_samples=6, confirm_seeds=2,
                  results=str(tmp_path), families={"adam": {"initial_lr": 0.001},
                                                   "step": {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": Choice(1, 2)}})
    lines = []
    _, _, status = launch(sweep, print_fn=lines.append)
    assert status == 0
    trials = pd.read_parquet(tmp_path / "trials")
    search = trials[trials["stage"] == "search"]
    assert sorted((family, json.loads(params).get("epochs_drop")) for family, params in
                  zip(search["family"], search["params"])) == [("constant", None), ("step", 1), ("step", 2)]
    assert lines[0].endswith(", 3 trials of up to 2 epochs")
    assert any(line.startswith("confirming:") for line in lines) and (trials["stage"] == "confirm").sum() == 4


def test_a_diverging_schedule_ends_diverged_and_the_sweep_goes_on(ray_session, tmp_path):
    configs = [{"family": "constant", "initial_lr": 1e20}, {"family": "step", "initial_lr": 0.1, "drop": 0.5,
                                                          "epochs_drop": 2}]
    sweep = Sweep(name="blowup", dataset="digits", subsample=300, configs=configs, max_epochs=4,
                  early_stopping=None, metric="val_loss", results=str(tmp_path))
    _, _, status = launch(sweep, print_fn=lambda line: None)
    assert status == 0  # a diverged trial is a result, not a failure
    trials, epochs = pd.read_parquet(tmp_path / "trials"), pd.read_parquet(tmp_path / "epochs")
    blown = trials[trials["family"] == "constant"].iloc[0]
    assert blown["status"] == "diverged" and blown["epochs"] < 4
    rows = epochs[epochs["trial_id"] == blown["trial_id"]].sort_values("epoch")
    assert len(rows) == blown["epochs"]
    # stored as Keras measured it: the finite worst value (1e30) went to Optuna and ASHA only
    assert not math.isfinite(rows["loss"].iloc[-1]) and not math.isfinite(rows["val_loss"].iloc[-1])
    assert not math.isfinite(blown["final_val_loss"]) and blown["best_epoch"] != blown["epochs"]
    assert trials.loc[trials["family"] == "step", "status"].iloc[0] == "completed"


def sigkill_launch(args, ready, settle=0, every=0.1, tune_saves_every=1, state=None, holds=None):
    """`python -m lrsweep ARGS`, with Tune saving its state every `tune_saves_every` seconds,
    killed with SIGKILL (its whole process group: a real kill, no chance to flush) `settle`
    seconds after `ready()` first holds, and (given `state`, an experiment folder of Tune's)
    once the state saved there is whole (Tune copies it file by file) and `holds()`, both
    checked with the launch stopped (SIGSTOP); returns the time just before the kill. Fails
    if the launch ends first."""
    driver = subprocess.Popen([sys.executable, "-m", "lrsweep", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": str(tune_saves_every)})
    try:
        wait_for(lambda: driver.poll() is not None or ready(), 180, "the launch was not ready to kill in 180 s", every)
        assert driver.poll() is None, "the launch ended before it could be killed"
        time.sleep(settle)
        if state is not None:

            def whole_and_holds():
                os.killpg(driver.pid, signal.SIGSTOP)
                if _damaged_tune_state(str(state)) is None and holds():
                    return True
                os.killpg(driver.pid, signal.SIGCONT)
                return False

            wait_for(whole_and_holds, 60, f"no whole state of Tune's in {state} held in 60 s", every)
        return pd.Timestamp.now(tz="UTC")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def test_a_launch_killed_mid_search_resumes_to_the_end_and_loses_nothing(ray_session, tmp_path):
    """SIGKILL of the driver mid-search (a real kill, no chance to flush) just after Tune saved
    its experiment state, then `--resume`: every trial that state holds done (so the resume
    does not run it again) and every trial stored before the kill is still there, the search
    and its confirmation end, and each trial and epoch reads back once.

    Tune saves its state as the search starts and then every 10 s (TUNE_GLOBAL_CHECKPOINT_S
    "auto"); a faster machine ran all 12 trials of a search before the second save, so here the
    driver saves every second: the first state with a trial done then comes while most trials
    are still to run, on any machine. What is saved, and how a resume reads it, is the same."""
    results = tmp_path / "results"
    args = ["launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--num-samples", "24", "--max-epochs", "8",
            "--confirm-seeds", "2", "--results", str(results), "--name", "killed", "--address", ray_session]
    # the first saved state with a trial done: some trials stored, more running; killed once
    # Tune's copy of it is whole (a kill mid-copy: the test of a state cut short)
    killed = results / "tune" / "killed"
    sigkill_launch(args, lambda: tune_finished(killed)[0], every=0.02, state=killed,
                   holds=lambda: tune_finished(killed)[0])
    slots = trainers(1)  # the killed launch's trainers go on with its trials until they see it died
    finished, saved = tune_finished(results / "tune" / "killed")  # the state as the kill left it
    before = read_frame(str(results), "trials")
    assert saved and finished <= set(before["trial_id"])
    assert 0 < len(before) < 24

    done = lrsweep(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert trainers(1) == slots  # the resume trained on them: they stopped the dead launch's trials
    trials = read_frame(str(results), "trials")
    epochs = read_frame(str(results), "epochs")
    assert set(before["trial_id"]) <= set(trials["trial_id"]) and trials["trial_id"].is_unique
    search, confirm = trials[trials["stage"] == "search"], trials[trials["stage"] == "confirm"]
    # trials stored after the last save count as done (the next test makes sure there are some)
    assert len(search) == 24
    assert len(confirm) == 2 * rank(search)["best_trial"].notna().sum()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    stored = epochs.groupby("trial_id").size()
    assert (stored[trials["trial_id"]].to_numpy() == trials["epochs"].to_numpy()).all()


@pytest.mark.parametrize("kind", ["search", "configs", "budget"])
def test_trials_stored_after_tunes_last_save_count_as_done_on_resume(ray_session, tmp_path, kind):
    """SIGKILL of the driver once four trials are stored, Tune having saved its state only as
    the run started (with its first trials still to start): that state holds at most two of
    them. `--resume` counts the others as done instead of drawing as many more (a search) or
    training their configs again (fixed configs; the first rung of early_stopping="budget",
    whose trials Tune gives their budget): the stage ends with its trials, those among them as
    they were stored, and no configuration trained twice."""
    results = tmp_path / "results"
    # trials of at least 6 epochs of 118 batches, or 2 of 235 (about a second): the stage's
    # trials take several of the Recorder's 2 s between writes, and the kill comes mid-stage
    count = 24 if kind == "budget" else 16
    trials = {"search": "families={'constant': {'initial_lr': Range(0.01, 0.3, log=True)}, 'exponential': "
                        "{'initial_lr': Range(0.01, 0.3, log=True), 'k': Range(0.01, 0.2)}}, num_samples=16",
              "configs": "configs=[{'family': 'constant', 'initial_lr': 0.01 * k} for k in range(1, 17)]",
              "budget": "configs=[{'family': 'constant', 'initial_lr': 0.01 * k} for k in range(1, 25)]"}[kind]
    stopping = ("early_stopping='budget', grace_period=2, reduction_factor=4, batch_size=1" if kind == "budget" else
                "early_stopping='asha', grace_period=6, reduction_factor=3, batch_size=2")
    (tmp_path / "late.py").write_text(
        "from lrsweep import Range, Sweep\nSWEEP = Sweep(name='late', dataset='ionosphere', validation_split=0.33, "
        f"model_args={{'hidden': (34,)}}, optimizer_args={{'momentum': 0.8}}, max_epochs=8, {stopping}, "
        f"confirm_seeds=0, {trials})\n")
    args = ["launch", str(tmp_path / "late.py"), "--data-dir", TEST_DATA, "--results", str(results), "--name", "late",
            "--address", ray_session]
    sigkill_launch(args, lambda: len(read_frame(str(results), "trials")) >= 4, settle=0, every=0.05,
                   tune_saves_every=3600)
    before = read_frame(str(results), "trials")
    known = tune_trials(results / "tune" / "late")
    late = before[~before["trial_id"].isin(known)]
    assert len(known) <= 2 and len(before) < count and len(late) >= 2, (len(known), len(before))

    done = lrsweep(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(late)} trials stored after Tune's last save before the launch stopped count as done" in done.stdout
    trials = read_frame(str(results), "trials")
    assert trials["trial_id"].is_unique
    stage = trials[trials["budget"] == 2] if kind == "budget" else trials
    assert len(stage) == count and not stage.duplicated(["family", "params"]).any()
    kept = trials.set_index("trial_id").loc[late["trial_id"]]
    assert (kept["end_time"].to_numpy() == late["end_time"].to_numpy()).all()  # not trained again
    assert done.stdout.count(f" {count}/{count} ") == 1  # the progress counts them
    if kind == "budget":
        assert len(trials) == count + count // 4  # and the next rung trains the best quarter
        return
    # ASHA's rungs, as Tune saved them last, hold them too: the trials after the resume were
    # judged against them
    saved = sorted((results / "tune" / "late").glob("callback-states-*.pkl"))[-1]
    states = pickle.loads(saved.read_bytes()).values()
    (rungs,) = [state["rungs"] for state in states if isinstance(state, dict) and "rungs" in state]
    for milestone, recorded in rungs[0]:
        assert set(recorded) == set(trials.loc[trials["epochs"] >= milestone, "trial_id"]), milestone


def long_sweep(folder, search=False):
    """A sweep file of one digits trial of 300 epochs that saves a checkpoint every second:
    a fixed configuration, or (`search`) Optuna's one draw of a search, with no checkpoint."""
    sweep = folder / "long.py"
    trials = ("families={'constant': {'initial_lr': Range(0.01, 0.02)}}, num_samples=1, confirm_seeds=0, "
              "early_stopping=None, checkpoint_seconds=None" if search else
              "configs=[{'family': 'constant', 'initial_lr': 0.01}], checkpoint_seconds=1")
    sweep.write_text(f"from lrsweep import Range, Sweep\nSWEEP = Sweep(name='long', dataset='digits', max_epochs=300, "
                     f"{trials})\n")
    return sweep


def test_a_launch_killed_mid_trial_resumes_that_trial_from_its_checkpoint(ray_session, tmp_path):
    """SIGKILL of the driver while its one long trial runs, after the trial saved checkpoints
    and Tune its state, then `--resume`: the trial goes on from its latest checkpoint still
    in storage, not from its first epoch, and the store holds it once, with each of its 300
    epochs once and its first start.

    Tune deletes a trial's oldest checkpoint as it registers a new one and saves its state
    later: a kill in between leaves a state naming a checkpoint that is gone. Here the
    newest checkpoints are deleted after the kill, so that Tune's state names a missing one
    whichever it holds, as the latest or as one to delete: the resume neither fails the trial
    nor logs Tune's error at its next checkpoint."""
    results = tmp_path / "results"
    sweep = long_sweep(tmp_path)
    args = ["launch", str(sweep), "--results", str(results), "--name", "long", "--address", ray_session]
    # Tune saved its state since the trial's second checkpoint
    killed = sigkill_launch(args, lambda: list(results.glob("tune/long/*/checkpoint_000001")), settle=1.5)
    assert read_frame(str(results), "trials").empty  # the trial was not done
    *newest, oldest = sorted(results.glob("tune/long/*/checkpoint_*"), reverse=True)
    for folder in newest:
        shutil.rmtree(folder)
    oldest_epoch = json.loads((oldest / "state.json").read_text())["epoch"]

    done = lrsweep(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Error handling checkpoint" not in done.stderr + done.stdout
    trials, epochs = read_frame(str(results), "trials"), read_frame(str(results), "epochs")
    assert len(trials) == 1 and trials["status"].iloc[0] == "completed" and trials["epochs"].iloc[0] == 300
    assert trials["resumed_from"].iloc[0] == oldest_epoch
    assert sorted(epochs["epoch"]) == list(range(1, 301))
    assert epochs.loc[epochs["epoch"] == 1, "end_time"].iloc[0] < killed  # not trained again
    assert trials["start_time"].iloc[0] < killed
    assert not list(results.glob("tune/*/*/checkpoint_*"))  # a trial that ended needs them no more


def test_trials_that_ended_just_before_a_kill_go_on_from_their_checkpoints_on_resume(ray_session, tmp_path):
    """SIGKILL of the driver as soon as the first two trials have ended and been stored,
    before Tune saved its state again (here every 60 s, and when a trial has saved two
    checkpoints since): that state may still have them running. A trial's checkpoints are
    deleted only once a saved state says it ended, so after `--resume` such a trial goes on
    from its latest checkpoint instead of training again from its first epoch; the store
    then holds every trial once, complete, and no checkpoint is left."""
    results = tmp_path / "results"
    sweep = tmp_path / "ended.py"
    sweep.write_text("from lrsweep import Sweep\nSWEEP = Sweep(name='ended', dataset='digits', max_epochs=200, "
                     "checkpoint_seconds=2, early_stopping=None, configs=[{'family': 'constant', 'initial_lr': lr} "
                     "for lr in (0.01, 0.02, 0.03)])\n")
    args = ["launch", str(sweep), "--results", str(results), "--name", "ended", "--address", ray_session]
    killed = sigkill_launch(args, lambda: len(read_frame(str(results), "trials")) >= 2, settle=0,
                            tune_saves_every=60)
    first = read_frame(str(results), "trials")["trial_id"].tolist()

    done = lrsweep(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials, epochs = read_frame(str(results), "trials"), read_frame(str(results), "epochs")
    assert len(trials) == 3 and (trials["status"] == "completed").all() and (trials["epochs"] == 200).all()
    # (the third trial, begun after Tune's last save, ran again as a new trial: its first
    # attempt's epochs stay in the store, as those of a trial never stored; its checkpoints,
    # if it saved one before the kill, are deleted)
    epochs = epochs[epochs["trial_id"].isin(trials["trial_id"])]
    assert sorted(epochs.groupby("trial_id").size()) == [200] * 3 and not epochs.duplicated(["trial_id", "epoch"]).any()
    first_epochs = epochs[epochs["trial_id"].isin(first) & (epochs["epoch"] == 1)]
    assert len(first_epochs) == 2 and (first_epochs["end_time"] < killed).all()  # not trained again
    assert not list(results.glob("tune/*/*/checkpoint_*"))


def test_a_resumed_search_judges_its_next_trials_against_the_rungs_before_the_kill(ray_session, tmp_path):
    """ASHA's rungs (each trial's result at each rung) survive a driver SIGKILL and `--resume`.
    Two good trials (one config twice: they train alike) pass the one rung (epoch 500) and
    end; the driver is killed while two trials at a rate that cannot learn train towards
    it; after the resume the rung stops both. Tune does not save its scheduler: with the
    rung lost, the first poor trial found it empty and trained to the end."""
    results = tmp_path / "results"
    sweep = tmp_path / "rungs.py"
    configs = [{"family": "constant", "initial_lr": lr} for lr in (0.05, 0.05, 1e-7, 2e-7)]
    sweep.write_text(f"from lrsweep import Sweep\nSWEEP = Sweep(name='rungs', dataset='ionosphere', "
                     f"validation_split=0.33, model_args={{'hidden': (34,)}}, batch_size=28, max_epochs=600, "
                     f"early_stopping='asha', grace_period=500, reduction_factor=3, configs={configs!r})\n")
    args = ["launch", str(sweep), "--data-dir", TEST_DATA, "--results", str(results), "--name", "rungs",
            "--address", ray_session]
    # once the good trials are stored and a state Tune saved since holds them done (the poor
    # trials are a few seconds into their 500 epochs)
    def good():
        return set(read_frame(str(results), "trials")["trial_id"])

    sigkill_launch(args, lambda: len(good()) >= 2, state=results / "tune" / "rungs",
                   holds=lambda: good() <= tune_finished(results / "tune" / "rungs")[0])
    stored = read_frame(str(results), "trials")
    assert len(stored) == 2 and (stored["initial_lr"] == 0.05).all()

    done = lrsweep(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = read_frame(str(results), "trials")
    poor = trials[trials["initial_lr"] < 1e-6]
    assert poor["status"].tolist() == ["early_stopped"] * 2 and poor["epochs"].tolist() == [500, 500]


def store_files(results, table="*"):
    """The Parquet files of `table` (of every table) under `results`, relative to it."""
    return sorted(p.relative_to(results) for p in results.glob(f"{table}/*/*/*.parquet"))


def stored(results, table):
    """Whether some rows of `table` are stored under `results`."""
    return lambda: bool(store_files(results, table))


def ctrl_c_launch(results, ready, *args, sweep="sweeps/ionosphere.py", again=None, sent=signal.SIGINT, env=None,
                  every=0.2, merged=False, until_exit=False, group=False):
    """`launch sweeps/ionosphere.py` (or `sweep`) stopped by SIGINT (as a terminal sends
    Ctrl-C; or `sent`; to its whole process group if `group`, as plain `timeout` sends it)
    once `ready()` holds (asked every `every` seconds), and again `again` seconds later if
    given (and every `again` seconds until it exits if `until_exit`); returns its exit
    status, stdout and stderr (None if `merged` into stdout, in the order written, as a
    terminal shows them). `env` adds to the environment."""
    command = [sys.executable, "-m", "lrsweep", "launch", sweep, "--data-dir", TEST_DATA,
               "--results", str(results), *args]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True,
                              start_new_session=True, env={**os.environ, **(env or {})})
    try:
        deadline = time.time() + 180
        while not ready():
            assert driver.poll() is None and time.time() < deadline, "the launch ended before it could be stopped"
            time.sleep(every)
        if group:
            os.killpg(driver.pid, sent)
        else:
            driver.send_signal(sent)
        while again is not None and driver.poll() is None:
            time.sleep(again)
            driver.send_signal(sent)
            if not until_exit:
                break
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    return driver.returncode, stdout, stderr


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_launch_with_status_130_and_says_how_to_finish_it(ray_session, tmp_path, sent):
    """Ctrl-C (SIGINT to the driver, as a terminal sends it), or SIGTERM (`kill`, `timeout`,
    `ray job stop`, a container's stop; it exited 1 with none of this): the trials stored so
    far stay, the ranking of what ran is printed, no confirmation starts, the exit status is
    130, and the last line is the command that finishes the run."""
    results = tmp_path / "results"
    returncode, stdout, stderr = ctrl_c_launch(results, stored(results, "trials"),
                                               "--num-samples", "60", "--max-epochs", "8", "--name", "stopped",
                                               "--address", ray_session, sent=sent)
    assert returncode == 130, stderr[-2000:]
    trials = read_frame(str(results), "trials")
    assert 0 < len(trials) < 60 and (trials["stage"] == "search").all()
    assert "rank" in stdout and "confirming" not in stdout
    last = stdout.strip().splitlines()[-1]
    assert "--resume" in last and "--name stopped" in last


def test_a_sigterm_to_the_whole_process_group_ends_the_launch_at_once_with_the_command_that_finishes_it(
        ray_session, tmp_path):
    """Plain `timeout` signals the launch's whole process group, the services of the Ray it
    started among them, which end: Tune's stop waited 60 s for them, then Ray aborted the
    launch ("Failed to connect to GCS"), with no word of the run. The launch now says so and
    gives the command that finishes the run, exit 1; that command finishes it."""
    results = tmp_path / "results"
    sweep = long_sweep(tmp_path)
    returncode, stdout, stderr = ctrl_c_launch(results, lambda: list(results.glob("tune/long/*/checkpoint_000001")),
                                               "--name", "long", sweep=str(sweep), sent=signal.SIGTERM, group=True)
    assert returncode == 1, stdout[-2000:] + stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("lrsweep: stopped: the SIGTERM reached the launch's own Ray too"), stderr[-2000:]
    again = shlex.split(last.split("this finishes it: lrsweep ", 1)[1])
    assert again[-3:] == ["--name", "long", "--resume"], last
    done = lrsweep(*again, "--address", ray_session, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = read_frame(str(results), "trials")
    assert len(trials) == 1 and trials["epochs"].iloc[0] == 300 and trials["status"].iloc[0] == "completed"


def test_a_launch_whose_output_reader_stops_reading_stops_as_on_ctrl_c_with_status_141(ray_session, tmp_path):
    """`launch ... | head`: once head has its lines, the launch's next line finds no reader.
    It stops as a Ctrl-C stops it, as SIGPIPE ends any command: no traceback (Tune's
    callbacks raised BrokenPipeError at every trial), what ended is stored, exit 141, and
    the way to finish the run is said on stderr, the output being gone."""
    results = tmp_path / "results"
    returncode, _, stderr = lrsweep_read_until(
        lambda line: line.startswith("["),  # a trial's progress line: the search runs
        "launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(results), "--num-samples", "60",
        "--max-epochs", "8", "--name", "piped", "--address", ray_session)
    assert returncode == 141, stderr[-2000:]
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-2000:]
    assert "Stop signal received" not in stderr  # Tune's notice of a Ctrl-C ("Press CTRL+C to skip"): none came
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("lrsweep: the launch stopped, as the reader of its output stopped reading; what ended "
                           "is stored; this finishes it: lrsweep launch "), last
    assert "--resume" in last and "--name piped" in last
    trials = read_frame(str(results), "trials")
    assert 0 < len(trials) < 60 and (trials["stage"] == "search").all()


def test_a_launch_whose_output_reader_stops_at_the_searchs_end_starts_no_confirmation(ray_session, tmp_path):
    """The reader gone as the search's last trial ends: Tune's stage had all it needed, but
    the launch starts no further stage (its confirmation trained with nobody reading, and
    Tune's handler left in place took the stop meant for it)."""
    results = tmp_path / "results"
    returncode, _, stderr = lrsweep_read_until(
        lambda line: " 3/3 " in line, "launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results",
        str(results), "--num-samples", "3", "--max-epochs", "2", "--confirm-seeds", "2", "--name", "ends",
        "--address", ray_session)
    assert returncode == 141, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("lrsweep: the launch stopped, as the reader of its output "
                                                      "stopped reading; what ended is stored; this finishes it:")
    trials = read_frame(str(results), "trials")
    assert len(trials) == 3 and (trials["stage"] == "search").all()


def test_a_second_ctrl_c_still_says_how_to_finish_the_run(ray_session, tmp_path):
    """Tune's first Ctrl-C says "Press CTRL+C again to skip": the second stops the launch
    where it is, before its ranking, or comes as it exits, Tune's first having ended the
    run at once (it was killed by the signal there). It exits 130 all the same, and its last
    line still gives the command that finishes the run (the trials that ended are stored)."""
    results = tmp_path / "results"
    returncode, output, _ = ctrl_c_launch(results, stored(results, "trials"),
                                          "--num-samples", "60", "--max-epochs", "8", "--name", "twice",
                                          "--address", ray_session, again=0.3, merged=True)
    assert returncode == 130, output[-4000:]
    last = output.strip().splitlines()[-1]
    assert "this finishes it: lrsweep launch" in last and "--name twice" in last and last.endswith("--resume")
    assert len(read_frame(str(results), "trials")) > 0


def test_a_launch_whose_client_is_gone_stops_once_however_often_linux_says_so(ray_session, tmp_path):
    """A launch run through Ray Client gets its parent-death signal (`client.PARENT_ENDED`)
    when its actor ends, once for each thread of the actor's worker Linux passes it on to:
    sent as SIGTERM, the second skipped Tune's last save, the launch stopped as on a second
    Ctrl-C. However often the signal comes, it stops as on one Ctrl-C: exit 130, the command
    that finishes the run last, and Tune's last save holding every stored trial as ended."""
    from lrsweep.run.client import PARENT_ENDED

    results = tmp_path / "results"
    returncode, stdout, stderr = ctrl_c_launch(results, stored(results, "trials"),
                                               "--num-samples", "60", "--max-epochs", "8", "--name", "orphan",
                                               "--address", ray_session, sent=PARENT_ENDED, again=0.01,
                                               until_exit=True)
    assert returncode == 130, stderr[-2000:]
    last = stdout.strip().splitlines()[-1]
    assert "this finishes it" in last and "--name orphan" in last and last.endswith("--resume"), stdout[-2000:]
    finished, saved = tune_finished(results / "tune" / "orphan")
    assert saved and set(read_frame(str(results), "trials")["trial_id"]) == finished


def test_ctrl_c_pressed_again_and_again_exits_130_and_keeps_what_is_stored(ray_session, tmp_path):
    """Ctrl-C held down (every 0.1 s until the launch has exited): some come as the launch
    exits, where one killed it with the signal instead of exit 130. Its output still gives
    the command that finishes the run, and what ended is stored."""
    results = tmp_path / "results"
    returncode, output, _ = ctrl_c_launch(results, stored(results, "trials"),
                                          "--num-samples", "60", "--max-epochs", "8", "--name", "held",
                                          "--address", ray_session, again=0.1, until_exit=True, merged=True)
    assert returncode == 130, output[-4000:]
    assert "this finishes it: lrsweep launch" in output and "--name held" in output, output[-4000:]
    assert len(read_frame(str(results), "trials")) > 0


def test_a_run_whose_results_folder_moved_resumes_into_it(ray_session, tmp_path):
    """A stopped run's folder moved (renamed, or copied to another machine) with its Tune
    state inside (the default `storage`): `--resume --results NEW` stores the rest of the
    run there, beside the trials that moved, and writes nothing where the run began (Tune's
    restored state held that launch's Recorder, which wrote there)."""
    results, moved = tmp_path / "results", tmp_path / "moved"
    args = ["--num-samples", "30", "--max-epochs", "8", "--confirm-seeds", "0", "--name", "moving",
            "--address", ray_session]
    returncode, stdout, stderr = ctrl_c_launch(results, stored(results, "trials"), *args)
    assert returncode == 130, stdout[-2000:] + stderr[-2000:]
    before = len(read_frame(str(results), "trials"))
    results.rename(moved)
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(moved), *args,
                   "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not results.exists()
    trials = read_frame(str(moved), "trials")
    assert len(trials) == 30 > before and trials["trial_id"].is_unique


def test_a_search_trial_trained_again_on_resume_reports_again_without_a_warning(ray_session, tmp_path):
    """Ctrl-C while a search's one trial runs, with no checkpoint: `--resume` trains it again
    from its first epoch, which reports to Optuna the epochs it already has; Optuna keeps the
    first report of each, and its warning about each is no news to the user."""
    results = tmp_path / "results"
    sweep = long_sweep(tmp_path, search=True)
    args = ["--name", "again", "--address", ray_session]
    returncode, stdout, stderr = ctrl_c_launch(results, stored(results, "epochs"), *args, sweep=str(sweep))
    assert returncode == 130, stdout[-2000:] + stderr[-2000:]
    done = lrsweep("launch", str(sweep), "--data-dir", TEST_DATA, "--results", str(results), *args, "--resume",
                   timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is already reported" not in done.stderr, done.stderr[-3000:]
    assert read_frame(str(results), "trials")["epochs"].tolist() == [300]


def test_ctrl_c_during_the_last_trials_of_a_search_still_stops_the_launch(ray_session, tmp_path):
    """Ctrl-C when every trial of the search has started (here both of two): the running
    trials end unfinished, so the launch stops with status 130 rather than going on to
    confirm (Tune stops them TERMINATED all the same)."""
    results = tmp_path / "results"
    returncode, stdout, stderr = ctrl_c_launch(results, stored(results, "epochs"),
                                               "--num-samples", "2", "--max-epochs", "400", "--name", "last",
                                               "--address", ray_session)
    assert returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "confirming" not in stdout
    assert "--resume" in stdout.strip().splitlines()[-1] and "Tuner.restore" not in stderr


def test_a_trial_stopped_by_ctrl_c_goes_on_from_its_checkpoint_on_resume(ray_session, tmp_path):
    """Ctrl-C while the one trial runs, after it saved checkpoints: Tune stops it TERMINATED,
    as if it had ended, but its checkpoints stay, and `--resume` goes on from the latest."""
    results = tmp_path / "results"
    sweep = long_sweep(tmp_path)
    args = ["--name", "long", "--address", ray_session]
    started = pd.Timestamp.now(tz="UTC")
    returncode, stdout, stderr = ctrl_c_launch(results, lambda: list(results.glob("tune/long/*/checkpoint_000001")),
                                               *args, sweep=str(sweep))
    assert returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "no trial of long has ended: nothing to rank yet" in stdout  # (not "no trials in the store": a store
    # holding other runs has some)
    stopped = pd.Timestamp.now(tz="UTC")
    assert list(results.glob("tune/long/*/checkpoint_*"))

    done = lrsweep("launch", str(sweep), "--data-dir", TEST_DATA, "--results", str(results), *args, "--resume",
                   timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials, epochs = read_frame(str(results), "trials"), read_frame(str(results), "epochs")
    assert len(trials) == 1 and trials["epochs"].iloc[0] == 300 and trials["resumed_from"].iloc[0] > 0
    assert sorted(epochs["epoch"]) == list(range(1, 301))
    assert started < epochs.loc[epochs["epoch"] == 1, "end_time"].iloc[0] < stopped  # not trained again
    assert not list(results.glob("tune/*/*/checkpoint_*"))


def test_ctrl_c_while_the_launchs_own_ray_starts_leaves_none_of_its_processes(tmp_path, ray_dir):
    """Ctrl-C as soon as the raylet has started Ray's agents, before `ray.init` returns (a
    window of about 2 s here): the launch stops, exit 130, and so does every process of the
    Ray it was starting (its dashboard and runtime-env agents were left running, with
    parent 1)."""
    mark = f"RAY_TMPDIR={ray_dir}".encode()

    def processes(*named):
        """The processes of the launch's Ray (and the launch), or those whose command line
        holds one of `named`."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as environ, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    line = cmdline.read()
                    if mark in environ.read().split(b"\0") and (not named or any(n in line for n in named)):
                        found.append(int(pid))
            except OSError:  # ended meanwhile
                pass
        return found

    try:
        returncode, stdout, stderr = ctrl_c_launch(
            tmp_path / "results", lambda: processes(b"dashboard/agent.py", b"runtime_env/agent"), "--num-samples", "2",
            "--max-epochs", "8", "--address", "local", env={"RAY_TMPDIR": ray_dir}, every=0.02)
        assert returncode == 130, stderr[-2000:]
        assert "lrsweep: interrupted" in stderr
        wait_for(lambda: not processes(), 30, "processes of the launch's Ray were left running")
    finally:
        for pid in processes():
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_before_any_trial_started_says_what_it_stored_and_how_to_finish(ray_session, tmp_path):
    """Ctrl-C while the stage's one trial waits for a GPU that another job holds: the launch
    stops with status 130 and `--resume` on its last line, and does not say that the trials
    had ended before it (that is for the `--resume` of a stage that had ended)."""
    import ray

    @ray.remote(num_gpus=1, num_cpus=0)
    class Holder:
        def ready(self):
            return True

    holder = Holder.remote()  # the session's one (logical) GPU
    ray.get(holder.ready.remote())
    results = tmp_path / "results"
    sweep = tmp_path / "gpu.py"
    sweep.write_text("from lrsweep import Sweep\nSWEEP = Sweep(name='gpu', dataset='digits', resources={'cpu': 1, "
                     "'gpu': 1}, early_stopping=None, max_epochs=2, configs=[{'family': 'constant', "
                     "'initial_lr': 0.01}])\n")
    try:
        # Tune saved its state: its loop runs, with the trial pending
        returncode, stdout, stderr = ctrl_c_launch(
            results, lambda: list(results.glob("tune/waiting/experiment_state-*.json")), "--name", "waiting",
            "--address", ray_session, sweep=str(sweep))
    finally:
        ray.kill(holder)
    assert returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "nothing left to train" not in stdout
    assert read_frame(str(results), "trials").empty
    assert "--resume" in stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def ionosphere_results(ray_session, tmp_path_factory):
    """`launch sweeps/ionosphere.py` as the entrypoint of a Ray job runs it: no --address, the
    cluster named by RAY_ADDRESS (the session's Ray), and no RAY_AUTH_MODE in the environment
    (lrsweep turns token mode on because a token exists, as `ray start` does)."""
    results = tmp_path_factory.mktemp("results")
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--num-samples", "6",
                   "--max-epochs", "6", "--confirm-seeds", "0", "--results", str(results), "--name", "iono-test",
                   env={"RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": None})
    assert done.returncode == 0, done.stderr[-2000:]
    return results, done.stdout, done.stderr


def test_ionosphere_sweep_from_the_command_line_ranks(ionosphere_results):
    import ray

    results, stdout, stderr = ionosphere_results
    assert "dataset ionosphere" in stdout and "rank" in stdout
    # joining turns token mode on; Ray's notice of it is not repeated (the dashboard's line says how to sign in)
    assert "Token authentication" not in stderr, stderr[-2000:]
    # lrsweep's lines only: not Tune's configuration box nor its pointer to its own logs
    assert "Configuration for experiment" not in stdout and "View detailed results" not in stdout
    trials = pd.read_parquet(results / "trials")
    assert len(trials) == 6 and (trials["sweep"] == "iono-test").all()
    assert set(trials["node"]) == {ray.get_runtime_context().get_node_id()}  # it joined, not a Ray of its own
    assert (trials["dataset_source"] == "ionosphere").all()
    epochs = pd.read_parquet(results / "epochs")
    check_lr_column(trials[trials["status"] != "diverged"], epochs)


def wait_for_its_ray_to_end(ray_dir):
    """Wait until no process of the Ray kept in `ray_dir` runs (the raylet's agents may end
    a moment after the launch: Ray waits a second for the raylet alone); fail after 30 s."""
    wait_for(lambda: not [command for _, command in processes().values() if ray_dir in command], 30,
             "the launch left processes of its Ray running")


def test_a_launch_that_joins_a_cluster_leaves_every_process_of_it_running(ionosphere_results):
    """`launch` stops the Ray it started, faster than `ray.shutdown()` alone (driver.stop_ray);
    a cluster it joined is not its own to stop."""
    import ray

    processes = ray._private.worker._global_node.all_processes  # the session's Ray, started by this process
    assert "monitor" in processes
    assert all(info.process.poll() is None for infos in processes.values() for info in infos)


def test_a_launch_that_starts_its_own_ray_leaves_no_process_of_it(tmp_path, ray_dir):
    """The README's first command, with no cluster around: Ray starts with the launch, it
    starts no worker process but the trials' Tune actors and their trainers (on two cores,
    every other one slows their TensorFlow import), and none of its processes outlives it.
    A RAY_ADDRESS exported for `ray job` commands (the dashboard's http:// address, as Ray's
    docs set it) is not a cluster to join. The command it gives for the dashboard's token
    runs as shown where the virtual environment is not active (the README's `.venv/bin/python
    -m lrsweep`), `ray` not on the PATH."""
    inactive = {"PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                        if not os.path.exists(os.path.join(p, "ray")))}
    done = lrsweep("launch", "sweeps/digits.py", "--num-samples", "2", "--max-epochs", "3", "--confirm-seeds", "0",
                   "--results", str(tmp_path / "results"),
                   env={"RAY_ADDRESS": "http://127.0.0.1:8265", "RAY_TMPDIR": ray_dir, **inactive}, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = re.search(r"Ray dashboard: http\S+ +\(sign in with the token that `(.+) get-auth-token` prints\)",
                      done.stdout)
    assert shown, done.stdout[:2000]
    token = subprocess.run([*shlex.split(shown.group(1)), "get-auth-token"], cwd=REPO, capture_output=True,
                           text=True, env={**os.environ, **inactive}, timeout=60)
    assert token.returncode == 0 and token.stdout.strip(), token.stderr[-2000:]
    assert len(pd.read_parquet(tmp_path / "results" / "trials")) == 2
    assert list(os.scandir(ray_dir)), "the launch's Ray kept its files elsewhere: the checks below prove nothing"
    workers = {os.path.basename(log) for log in  # once each, here and under the session_latest link
               glob.glob(os.path.join(ray_dir, "**", "python-core-worker-*.log"), recursive=True)}
    # a trainer per trial slot of the machine's two CPUs, a Tune actor per trial at most
    assert 0 < len(workers) <= 4, workers
    wait_for_its_ray_to_end(ray_dir)


def _launch_memory_while_training(ray_session, tmp_path, rows):
    """The private resident memory (bytes; not the object store's shared memory it maps) of a
    `launch` process at its largest once its one trial, on an npz of `rows` rows of 1000
    float32 features, has trained an epoch: from then to its exit, sampled every 0.1 s."""
    data = tmp_path / f"rows{rows}.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((rows, 1000), dtype=np.float32), y=rng.integers(0, 2, rows))
    sweep = tmp_path / f"rows{rows}.py"
    sweep.write_text(f"from lrsweep import Sweep\nSWEEP = Sweep(name='mem', dataset='npz:{data}', validation_split=0.1, "
                     f"max_epochs=8, early_stopping=None, confirm_seeds=0, batch_size=1000, "
                     f"configs=[{{'family': 'constant', 'initial_lr': 0.01}}])\n")
    results, errors = tmp_path / f"results{rows}", tmp_path / f"stderr{rows}"
    with open(errors, "w") as stderr:
        launch = subprocess.Popen([sys.executable, "-m", "lrsweep", "launch", str(sweep), "--results", str(results),
                                   "--address", ray_session], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                  env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    samples, deadline = [], time.time() + 300
    try:
        while launch.poll() is None and time.time() < deadline:
            try:
                with open(f"/proc/{launch.pid}/status") as f:
                    rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))
                samples.append((time.time(), rss))
            except (OSError, StopIteration):  # it ended as we looked
                pass
            time.sleep(0.1)
    finally:
        if launch.poll() is None:
            launch.kill()
        launch.wait()
    assert launch.returncode == 0, errors.read_text()[-2000:]
    first = read_frame(str(results), "epochs")["end_time"].min().timestamp()
    trained = [rss for t, rss in samples if t >= first]
    assert trained, "the launch ended before it could be looked at once it had trained an epoch"
    return max(trained)


def test_a_launch_lets_its_copy_of_the_dataset_go_once_the_object_store_holds_it(ray_session, tmp_path):
    """The trials read the dataset zero-copy out of Ray's object store, the one copy a node
    holds: the launch's own process, which read it, keeps none once they train (a CIFAR-10 of
    600 MB would otherwise be held twice on the driver's node). With a 240 MB dataset it is
    no larger than with a tiny one, give or take a quarter of the dataset."""
    rows = 60_000
    tiny, large = (_launch_memory_while_training(ray_session, tmp_path, n) for n in (300, rows))
    assert large - tiny < rows * 1000 * 4 / 4, (tiny, large)


def test_a_name_the_store_holds_is_refused_without_resume(ionosphere_results):
    results = ionosphere_results[0]
    before = sorted(p.name for p in (results / "trials/dataset=ionosphere/sweep=iono-test").iterdir())
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(results),
                   "--name", "iono-test", timeout=60)
    assert_refused(done, "Argument `name` names a sweep the store or Tune's storage already holds", "name='iono-test'")
    assert sorted(p.name for p in (results / "trials/dataset=ionosphere/sweep=iono-test").iterdir()) == before


def test_a_resume_goes_on_with_the_settings_the_run_was_launched_with(ionosphere_results, tmp_path):
    """The fixture's run was launched with --num-samples 6 --max-epochs 6 --confirm-seeds 0.
    A `--resume` that leaves those flags out (forgotten after a kill) goes on with the run's
    own, and says so; one that gives another value, or a sweep file changed since, would mix
    settings with Tune's saved search (it trained 30-epoch trials as `early_stopped` of 60,
    then asked for `--resume` forever): refused, naming the setting, the run's value and the
    one received, before Ray starts, and nothing is touched."""
    results = ionosphere_results[0]
    files = store_files(results)
    tune_files = sorted(p.name for p in (results / "tune" / "iono-test").iterdir())
    resume = ["--data-dir", TEST_DATA, "--results", str(results), "--name", "iono-test", "--resume"]
    done = lrsweep("validate", "sweeps/ionosphere.py", *resume, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == ("resuming iono-test as it was launched: num_samples=6, max_epochs=6, "
                                           "confirm_seeds=0 (not the sweep file's)")
    assert "6 trials" in done.stdout
    refused = lrsweep("launch", "sweeps/ionosphere.py", *resume, "--max-epochs", "30", timeout=60)
    assert_refused(refused, "`max_epochs` (--max-epochs)", "'iono-test' was launched with, 6,", "max_epochs=30")
    refused = lrsweep("launch", "sweeps/ionosphere.py", *resume, "--seed", "3", timeout=60)
    assert_refused(refused, "`seed` (--seed)", "'iono-test' was launched with, 0,", "seed=3")
    edited = tmp_path / "ionosphere.py"
    edited.write_text((pathlib.Path(REPO) / "sweeps" / "ionosphere.py").read_text().replace("batch_size=28",
                                                                                          "batch_size=64"))
    refused = lrsweep("launch", str(edited), *resume, timeout=60)
    assert_refused(refused, "`batch_size`", "launched with, 28,", "batch_size=64")
    # the data read now is not the run's: one value of the CSV edited since (its checkpoints
    # would go on, its search's results would mix the two)
    rows = (pathlib.Path(TEST_DATA) / "ionosphere.csv").read_text().splitlines()
    first = rows[0].split(",")
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "ionosphere.csv").write_text(
        "\n".join([",".join(first[:2] + [str(float(first[2]) / 2)] + first[3:]), *rows[1:]]) + "\n")
    for command in ("validate", "launch"):
        refused = lrsweep(command, "sweeps/ionosphere.py", "--data-dir", str(tmp_path / "edited"), *resume[2:],
                          timeout=60)
        assert_refused(refused, "Argument `dataset` must hold the data run 'iono-test' was launched with, 235 "
                       "training and 116 validation rows of 34 features, 2 classes (b, g), digest ",
                       "Received: dataset='ionosphere', 235 training")
    assert store_files(results) == files
    assert sorted(p.name for p in (results / "tune" / "iono-test").iterdir()) == tune_files


def test_a_run_another_launch_is_running_is_refused(ray_session, tmp_path):
    """A `--resume` of a run while its launch still runs it (a second shell) trained its
    trials twice beside the first, both writing to the store: refused, naming the process
    that runs it, before anything else about the run is checked and before the data is read
    (a resume on another dataset is refused for running, not for its dataset). (The lock
    goes with that process however it ends: the kill tests resume at once.)"""
    results = tmp_path / "results"
    args = ["launch", str(long_sweep(tmp_path)), "--results", str(results), "--name", "busy", "--address", ray_session]
    first = subprocess.Popen([sys.executable, "-m", "lrsweep", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: first.poll() is not None or (results / "tune" / "busy" / "tuner.pkl").exists(), 180,
                 "the first launch did not start its run in 180 s")
        assert first.poll() is None, "the first launch ended before the second"
        second = lrsweep(*args, "--resume", timeout=60)
        assert_refused(second, "name='busy'", "another launch is running now", f"process {first.pid} on")
        elsewhere = lrsweep(*args, "--resume", "--dataset", "ionosphere", "--data-dir", TEST_DATA, timeout=60)
        assert_refused(elsewhere, "name='busy'", "another launch is running now", f"process {first.pid} on")
        assert first.poll() is None
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_a_store_that_cannot_be_written_mid_run_stops_it_in_one_line_and_resumes(ray_session, tmp_path):
    """The store's folder goes away under a running launch (here a file takes the place of
    its epochs folder; a full disk or a revoked credential alike): the run stops with exit 1
    and one line naming the store and the error, and the command that finishes the run
    (it was two tracebacks of Tune's). Once the folder is back, that command does."""
    results = tmp_path / "results"
    folder = results / "epochs" / "dataset=ionosphere" / "sweep=unwritable"
    args = ["launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(results), "--num-samples",
            "30", "--max-epochs", "30", "--confirm-seeds", "0", "--name", "unwritable", "--address", ray_session]
    driver = subprocess.Popen([sys.executable, "-m", "lrsweep", *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: driver.poll() is not None or store_files(results, "epochs"), 180, "no epoch stored in 180 s")
        assert driver.poll() is None, "the launch ended before its store went away"
        folder.rename(tmp_path / "kept")
        folder.write_text("not a folder")
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 1, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr and "checkpointing failed" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"lrsweep: error: cannot write the epochs table of the store {results}: ")
    assert "sweep=unwritable" in last and "--name unwritable" in last and last.endswith(" --resume")
    folder.unlink()
    (tmp_path / "kept").rename(folder)
    done = lrsweep(*args, "--resume", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials, epochs = read_frame(str(results), "trials"), read_frame(str(results), "epochs")
    assert len(trials) >= 30 and trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()


def test_resuming_a_run_that_ended_trains_nothing_and_says_so(ray_session, ionosphere_results, tmp_path):
    """`--resume` of a run whose trials all ended: no trial trains again, nothing is
    written, and the output says the trials ended before (not "stored 0 trials")."""
    results = tmp_path / "results"
    shutil.copytree(ionosphere_results[0], results)
    files = store_files(results)
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--num-samples", "6", "--max-epochs",
                   "6", "--confirm-seeds", "0", "--results", str(results), "--name", "iono-test", "--resume",
                   "--address", ray_session)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing left to train here: the 6 trials ended before this launch" in done.stdout
    assert "stored 0 trials" not in done.stdout
    assert store_files(results) == files


def test_a_resume_deletes_the_checkpoints_of_trials_it_trains_again_as_new_ones(ray_session, ionosphere_results,
                                                                               tmp_path):
    """A trial begun after Tune's last save before a kill trains again under a new id after
    `--resume`; its first attempt's checkpoint folders, in a trial folder that no state of
    Tune's names, are deleted as the launch ends (here one is made as a kill leaves it; the
    kill test above makes one when the third trial saved a checkpoint before the kill).
    Folders that are not Tune's trial folders stay."""
    results = tmp_path / "results"
    shutil.copytree(ionosphere_results[0], results)
    experiment = results / "tune" / "iono-test"
    lost = experiment / "train_0badc0de_7_family=sgd_constant,initial_lr=0.0100_2026-12-04_23-46-37"
    (lost / "checkpoint_000003").mkdir(parents=True)
    (lost / "checkpoint_000003" / "state.json").write_text('{"epoch": 4}')
    foreign = experiment / "notes" / "checkpoint_mine"
    foreign.mkdir(parents=True)
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--num-samples", "6", "--max-epochs",
                   "6", "--confirm-seeds", "0", "--results", str(results), "--name", "iono-test", "--resume",
                   "--address", ray_session)
    assert done.returncode == 0, done.stderr[-2000:]
    assert lost.is_dir() and not (lost / "checkpoint_000003").exists()
    assert foreign.is_dir()


def test_resuming_a_run_that_ended_while_tune_saved_between_its_last_epochs_trains_nothing(ray_session, tmp_path):
    """Tune marks a trial's last result done when the trial's function returns, after its last
    epoch's report; a save of Tune's state in between wrote the result without it, and
    Tune's later saves kept that copy. A `--resume` of the run then took its trials for ones
    a Ctrl-C had stopped and exited 130, asking for another `--resume`, forever (and a
    resumed search never went on to its confirmation runs). Tune saving at every step
    (`TUNE_GLOBAL_CHECKPOINT_S=0`) makes the save in between certain."""
    results = tmp_path / "results"
    sweep = tmp_path / "to_the_end.py"  # no early stopping: every trial's function returns after its last epoch
    sweep.write_text("from lrsweep import Sweep\nSWEEP = Sweep(name='to-the-end', dataset='ionosphere', max_epochs=4, "
                     "early_stopping=None, configs=[{'family': 'constant', 'initial_lr': lr} for lr in (0.01, 0.02)])\n")
    args = ["launch", str(sweep), "--data-dir", TEST_DATA, "--results", str(results), "--name", "saved-between",
            "--address", ray_session]
    first = lrsweep(*args, env={"TUNE_GLOBAL_CHECKPOINT_S": "0"})
    assert first.returncode == 0, first.stderr[-2000:]
    files = store_files(results)
    again = lrsweep(*args, "--resume")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "nothing left to train here: the 2 trials ended before this launch" in again.stdout
    assert store_files(results) == files


def test_a_name_with_tune_state_but_no_trial_stored_is_refused_without_resume(ionosphere_results, tmp_path):
    """A run stopped before its first trial was stored has only Tune's state: a new launch
    under its name would write over it."""
    results = tmp_path / "results"
    shutil.copytree(ionosphere_results[0] / "tune", results / "tune")
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(results),
                   "--name", "iono-test", timeout=60)
    assert_refused(done, "name='iono-test'")
    assert not (results / "trials").exists()


@pytest.mark.parametrize("command, stage", [("launch", "iono-test"), ("validate", "iono-test"),
                                            ("launch", "iono-test-confirm")])
def test_a_tune_state_cut_short_is_refused_on_resume_and_the_store_kept(ionosphere_results, tmp_path, command,
                                                                         stage):
    """A kill while Tune copies its state can leave a file of it cut short, in any stage of
    the run (each is a Tune experiment restored on its own); Tune would start that stage over.
    `--resume` says which file, before Ray starts, and keeps the store."""
    results = tmp_path / "results"
    shutil.copytree(ionosphere_results[0], results)
    if stage != "iono-test":  # a later stage's state, as Tune saves it beside the search's
        shutil.copytree(results / "tune" / "iono-test", results / "tune" / stage)
    searcher = next((results / "tune" / stage).glob("searcher-state-*.pkl"))
    content = searcher.read_bytes()
    searcher.write_bytes(content[:len(content) // 2])
    stored = sorted(p.name for p in results.rglob("*.parquet"))
    done = lrsweep(command, "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(results),
                   "--name", "iono-test", "--resume", timeout=60)
    assert_refused(done, f"{stage}/{searcher.name}", "name='iono-test'")
    assert sorted(p.name for p in results.rglob("*.parquet")) == stored


def test_best_schedule_round_trips_through_keras(ionosphere_results):
    """The exported JSON, loaded by Keras alone, gives the rates the trial trained with."""
    import keras

    results = ionosphere_results[0]
    done = lrsweep("best", "--dataset", "ionosphere", "--results", str(results), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    best = json.loads(done.stdout)
    epochs = pd.read_parquet(results / "epochs")
    lrs = epochs[epochs["trial_id"] == best["trial_id"]].sort_values("epoch")["lr"].to_numpy()
    optimizer = keras.optimizers.deserialize(best["optimizer"])
    spe = best["fit"]["steps_per_epoch"]
    if best["callbacks"]:  # plateau: a float rate and Keras' callback
        assert best["callbacks"][0]["class_name"] == "ReduceLROnPlateau"
        assert float(optimizer.learning_rate) == pytest.approx(lrs[0], rel=1e-6)
    elif best["schedule"]:
        schedule = keras.optimizers.schedules.deserialize(best["schedule"])
        got = [float(schedule(e * spe)) for e in range(len(lrs))]
        np.testing.assert_allclose(got, lrs, rtol=1e-6)
    else:
        np.testing.assert_allclose(float(optimizer.learning_rate), lrs, rtol=1e-6)


@pytest.mark.parametrize("config", [c for c in ONE_PER_FAMILY if c["family"] in ("cosine", "one_cycle", "step")])
def test_best_python_snippet_runs_without_lrsweep(ray_session, tmp_path, config):
    """`best --python` of a family with lrsweep's own class and of a Keras built-in, run
    where `import lrsweep` fails, gives the stored rates."""
    sweep = Sweep(name="snippet", dataset="digits", subsample=200, configs=[config], max_epochs=3,
                  early_stopping=None, results=str(tmp_path))
    launch(sweep, print_fn=lambda line: None)
    done = lrsweep("best", "--dataset", "digits", "--results", str(tmp_path), "--python", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = pd.read_parquet(tmp_path / "epochs").sort_values("epoch")
    spe = int(pd.read_parquet(tmp_path / "trials")["steps_per_epoch"].iloc[0])
    script = ("import sys\nsys.modules['lrsweep'] = None\n" + done.stdout
              + f"\nprint([float(schedule(e * {spe})) for e in range(3)])\n")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got, epochs["lr"].to_numpy(), rtol=1e-6)


def test_gpu_trials_take_the_card_ray_gives_them(ray_session, tmp_path):
    """The session's Ray has one logical GPU (the test machines have none): two trials of
    half a card each run side by side on card 0; of a whole card each, one after the other."""
    configs = [{"family": "constant", "initial_lr": 0.05}, {"family": "constant", "initial_lr": 0.2}]
    trials = {}
    for gpu in (0.5, 1):
        # Half a card: 60 epochs (some seconds), long enough that two trials started together still
        # overlap on a slow machine, where the two actors' imports of TensorFlow (before a trial's
        # start time) may end seconds apart. A whole card: one after the other however short
        sweep = Sweep(name="gpu", dataset="digits", subsample=300, configs=configs, max_epochs=60 if gpu < 1 else 5,
                      early_stopping=None, resources={"cpu": 1, "gpu": gpu}, results=str(tmp_path / str(gpu)))
        assert launch(sweep, print_fn=lambda line: None)[2] == 0
        trials[gpu] = pd.read_parquet(tmp_path / str(gpu) / "trials")
        assert list(trials[gpu]["gpu_ids"]) == ["0", "0"] and set(trials[gpu]["status"]) == {"completed"}

    def side_by_side(t):
        return t["start_time"].max() < t["end_time"].min()

    assert side_by_side(trials[0.5]) and not side_by_side(trials[1])


def test_a_launch_on_a_cluster_without_the_gpus_its_trials_ask_for_warns_that_they_wait(ray_session, tmp_path):
    """A joined cluster may grow (an autoscaler adding GPU nodes), so trials that ask for more
    GPUs than it has now are not refused; but they wait, forever where nothing adds them, and
    the user is told so at once. Ctrl-C still stops the launch."""
    line, returncode = waiting_launch_warning(tmp_path, ray_session, {"cpu": 1, "gpu": 2}, "GPUs each")
    assert line == ("lrsweep: warning: the trials ask for 2 GPUs each, and the cluster joined has 1 now: "
                    "they wait for nodes its autoscaler adds (forever, where it adds none)"), line
    assert returncode == 130


def test_a_reused_worker_frees_the_previous_trials_graphs():
    """A trial actor trains trial after trial in one process. When the next trial starts,
    every graph TensorFlow traced for the previous one must be freed, or a long sweep's
    workers grow with each trial (1.7 MB a trial of a small MLP, until TensorFlow's
    gradient registry was emptied of the trials' custom gradients)."""
    code = """
import gc, json, weakref
import keras
from tensorflow.python.framework.func_graph import FuncGraph
from lrsweep import Sweep
from lrsweep.run import trial
from lrsweep.run.driver import sweep_data, trial_arrays, training_setup

trial.warm_up()
sweep = Sweep(name="reuse", dataset="digits", subsample=200, validation_split=0.2, model_args={"hidden": (8,)},
              max_epochs=1, early_stopping=None, configs=[{"family": "constant", "initial_lr": 0.01}])
data, setup = trial_arrays(sweep_data(sweep)), training_setup(sweep)
alive = []
for seed in range(3):
    model, fit, _ = trial.build_trial({"family": "sgd/constant", "sgd": {"constant": {"initial_lr": 0.01}},
                                       "seed": seed}, data, setup)
    if seed:
        alive.append(sum(ref() is not None for ref in graphs))
    model.fit(**fit)
    graphs = [weakref.ref(o) for o in gc.get_objects() if isinstance(o, FuncGraph)]
    del model, fit
print(json.dumps({"traced": len(graphs), "alive": alive}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["traced"] > 0 and got["alive"] == [0, 0], got


def test_a_trial_on_the_model_its_worker_kept_trains_as_on_a_new_one():
    """A trial worker keeps the model it compiled (and traced) for its next trial of the
    same shape. The next trial must train exactly as it would on a new model: its seeded
    weights and dropout masks, its optimizer's state as new, its own schedule, epoch for
    epoch. Trials here alternate between two schedules and plateau's float rate."""
    code = """
import json
import keras
from lrsweep import Sweep
from lrsweep.run import trial
from lrsweep.run.driver import sweep_data, trial_arrays, training_setup

trial.warm_up()
sweep = Sweep(name="kept", dataset="digits", subsample=300, validation_split=0.2, max_epochs=4,
              model_args={"hidden": (16,), "dropout": 0.2}, configs=[{"family": "constant", "initial_lr": 0.01}])
data, setup = trial_arrays(sweep_data(sweep)), training_setup(sweep)
configs = {"one_cycle": {"family": "sgd/one_cycle", "sgd": {"one_cycle": {"max_lr": 0.2}}, "seed": 3},
           "step": {"family": "sgd/step", "sgd": {"step": {"initial_lr": 0.05, "drop": 0.5, "epochs_drop": 2}},
                    "seed": 5},
           "plateau": {"family": "sgd/plateau", "sgd": {"plateau": {"initial_lr": 0.05, "factor": 0.5,
                                                                    "patience": 1}}, "seed": 1}}

def run(name, kept):
    model, fit, _ = trial.build_trial(configs[name], data, setup, kept=kept)
    rates = []
    read = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: rates.append(
        float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))))
    history = model.fit(**{**fit, "callbacks": [*fit["callbacks"], read]}).history
    return {"history": history, "rates": rates, "model": id(model)}

new = {name: run(name, None) for name in configs}
kept = {}
order = ["one_cycle", "step", "plateau", "one_cycle", "step"]
print(json.dumps({"new": new, "kept": [[name, run(name, kept)] for name in order]}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name, run in got["kept"]:
        assert run["history"] == got["new"][name]["history"], name
        assert run["rates"] == got["new"][name]["rates"], name
    models = [run["model"] for _, run in got["kept"]]
    assert models[0] == models[1] == models[3] == models[4] != models[2]  # kept, but not across kinds of rate


def test_a_trial_resumed_from_its_checkpoint_goes_on_where_it_left_off():
    """A trial that saves a checkpoint every epoch end (`checkpoint_seconds`), then one that
    starts from its epoch-3 checkpoint (as a retry or a resumed trial does, here on a model
    its worker kept from another trial): it trains epochs 4 to 6 only, at the rates the
    uninterrupted trial had there (the schedule reads the restored step count; plateau's
    rate is the optimizer's restored one, and its counters are those it had at epoch 3),
    with the losses the uninterrupted trial had there (the trained weights, the same
    shuffled batches, the same units dropped), and keeps the first attempt's start. A checkpoint whose weights file is damaged: the trial
    trains again from its first epoch."""
    code = """
import json
import keras
from lrsweep import Sweep
from lrsweep.run import trial
from lrsweep.run.driver import sweep_data, trial_arrays, training_setup

trial.warm_up()
plateau_seen = []  # (best, wait) as ReduceLROnPlateau's epoch end finds them
original = keras.callbacks.ReduceLROnPlateau.on_epoch_end
def on_epoch_end(self, epoch, logs=None):
    plateau_seen.append((epoch + 1, self.best, self.wait))
    original(self, epoch, logs)
keras.callbacks.ReduceLROnPlateau.on_epoch_end = on_epoch_end
sweep = Sweep(name="resumed", dataset="digits", subsample=300, validation_split=0.2, max_epochs=6,
              model_args={"dropout": 0.2}, checkpoint_seconds=1e-9, configs=[{"family": "constant", "initial_lr": 0.01}])
data, setup = trial_arrays(sweep_data(sweep)), training_setup(sweep)
configs = {"step": {"family": "sgd/step", "sgd": {"step": {"initial_lr": 0.05, "drop": 0.5, "epochs_drop": 2}}},
           "plateau": {"family": "sgd/plateau", "sgd": {"plateau": {"initial_lr": 0.05, "patience": 1}}}}

def run(config, kept=None, resume=None):
    reports = []
    trial.run_trial(config, data, setup, reports.append, kept=kept, resume=resume)
    return reports

rows = lambda reports: [row for r in reports for row in r["rows"]]
out = {}
for name, config in configs.items():
    plateau_seen.clear()
    whole = run(config)
    seen = list(plateau_seen)
    checkpoint = next(r["checkpoint"] for r in whole if r["epoch"] == 3)
    kept = {}
    run({**config, "seed": 9}, kept=kept)  # another trial on the model this worker keeps
    plateau_seen.clear()
    resumed = run(config, kept=kept, resume=checkpoint)
    out[name] = {"whole": rows(whole), "resumed": rows(resumed), "start": whole[0]["trial_start"],
                 "resumed_start": resumed[0]["trial_start"], "saved": [r["epoch"] for r in whole if "checkpoint" in r],
                 "resumed_saved": [r["epoch"] for r in resumed if "checkpoint" in r],
                 "plateau_whole": seen, "plateau_resumed": list(plateau_seen)}
damaged = run(configs["step"], resume={**checkpoint, "weights": b"not a weights file"})
out["damaged"] = [row["epoch"] for row in rows(damaged)]
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got.pop("damaged") == [1, 2, 3, 4, 5, 6]
    # plateau's counters at its epoch-4 end: those it had after epoch 3, not reset
    assert got["plateau"]["plateau_resumed"][0] == got["plateau"]["plateau_whole"][3]
    for name, run in got.items():
        whole, resumed = run["whole"], run["resumed"]
        assert run["saved"] == [1, 2, 3, 4, 5] and run["resumed_saved"] == [4, 5], name  # none at the last epoch
        assert [row["epoch"] for row in resumed] == [4, 5, 6], name
        assert [row["lr"] for row in resumed] == [row["lr"] for row in whole[3:]], name
        for metric in ("loss", "accuracy", "val_loss"):
            assert [row[metric] for row in resumed] == pytest.approx([row[metric] for row in whole[3:]],
                                                                     rel=1e-6), (name, metric)
        assert run["resumed_start"] == run["start"], name
    assert len({row["lr"] for row in got["step"]["whole"]}) == 3  # the step schedule drops twice


def test_each_epoch_trains_on_every_row_once_and_validates_on_the_whole_validation_set():
    """A trial reads its training batches as one endless stream and its validation set
    copied into the trial when small, through the shared arrays when large (the pipelines
    start once per trial, not per epoch). Each epoch must still be one shuffled pass over
    the training rows, and each epoch's val_loss and val_accuracy those of the whole
    validation set: with fewer validation batches than a compiled call's steps and with
    more."""
    code = """
import json
import numpy as np
import keras
from lrsweep import Sweep
from lrsweep.run import trial
from lrsweep.run.driver import sweep_data, trial_arrays, training_setup

trial.warm_up()
out = []
for split, copy in ((0.2, True), (0.2, False), (0.8, True), (0.8, False)):
    trial.VALIDATION_COPY_BYTES = 16 * 2**20 if copy else 0
    sweep = Sweep(name="pipes", dataset="digits", subsample=300, validation_split=split, max_epochs=3, batch_size=25,
                  model_args={"hidden": (16,)}, configs=[{"family": "constant", "initial_lr": 0.05}])
    data, setup = trial_arrays(sweep_data(sweep)), training_setup(sweep)
    config = {"family": "sgd/constant", "sgd": {"constant": {"initial_lr": 0.05}}, "seed": 2}
    model, fit, spe = trial.build_trial(config, data, setup)
    weights = []
    keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    history = model.fit(**{**fit, "callbacks": [*fit["callbacks"], keep]}).history
    evaluated = []
    for w in weights:
        model.set_weights(w)
        evaluated.append(model.evaluate(data["x_val"], data["y_val"], batch_size=len(data["x_val"]), verbose=0,
                                        return_dict=True))
    stream = iter(fit["x"])
    passes, orders = [], []
    for epoch in range(3):
        rows = list(map(bytes, np.concatenate([next(stream)[0].numpy() for _ in range(spe)])))
        passes.append(sorted(rows) == sorted(map(bytes, data["x_train"])))
        orders.append(hash(tuple(rows)))
    out.append({"split": split, "copy": copy, "spe": spe, "validation_steps": fit["validation_steps"],
                "history": history, "evaluated": evaluated, "passes": passes,
                "orders": len(set(orders))})
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert {(r["spe"] > r["validation_steps"]) for r in runs} == {True, False}  # both cases ran
    for run in runs:
        assert run["passes"] == [True, True, True], run["split"]
        assert run["orders"] == 3, run["split"]  # shuffled anew each epoch
        for epoch, direct in enumerate(run["evaluated"]):
            assert run["history"]["val_accuracy"][epoch] == pytest.approx(direct["accuracy"], abs=1e-6), run
            assert run["history"]["val_loss"][epoch] == pytest.approx(direct["loss"], rel=1e-4), run


def test_a_trainable_registered_again_is_the_one_trials_get(ray_session):
    """The driver keeps the trainables it has read from Tune's registry (a GCS round trip
    per lookup otherwise); each stage and each launch in one process registers its own
    under the same name, and its trials must get that one, not the last one read."""
    from ray import tune
    from ray.tune.registry import get_trainable_cls, register_trainable

    from lrsweep.run.driver import keep_registered_trainables

    def train(config):
        pass

    keep_registered_trainables()
    for cpus in (1, 2):
        register_trainable("lrsweep-test-registry", tune.with_resources(train, {"cpu": cpus}))
        for _ in range(2):
            request = get_trainable_cls("lrsweep-test-registry").default_resource_request({})
            assert request.bundles == [{"CPU": cpus}]


def test_a_sigterm_that_ends_a_trials_actor_prints_no_traceback(ray_session):
    """As Tune ends a trial, Ray removes its placement group and SIGTERMs its actor; Ray's
    handler raises SystemExit in the next Python code the actor runs, and where that is a
    weakref callback, Python printed "Exception ignored ... SystemExit: 1" and a traceback,
    which Ray copied into a launch's output (ray-project/ray#13487). Here the SIGTERM comes
    inside a weakref callback on purpose, in a real Ray worker with Ray's own handler:
    nothing is printed once `quiet_termination` (what the trial's actor calls) is in place,
    and any other exception Python cannot raise still is."""
    import ray

    @ray.remote(num_cpus=0)
    class Actor:
        def error_in_weakref_callback(self, quiet, error):
            import io
            import os
            import signal
            import sys
            import weakref

            from lrsweep.quiet import quiet_termination

            if quiet:
                quiet_termination()

            def callback(_):
                if error is None:
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(10_000):  # Python runs a signal's handler between instructions
                        pass
                else:
                    raise error

            class Thing:
                pass

            printed = io.StringIO()
            saved, sys.stderr = sys.stderr, printed
            try:
                thing = Thing()
                ref = weakref.ref(thing, callback)  # noqa: F841  (the callback runs as `thing` goes)
                del thing
            finally:
                sys.stderr = saved
            return printed.getvalue()

    for quiet, error, expected in [(False, None, "SystemExit"), (True, None, ""), (True, ValueError("x"), "ValueError")]:
        actor = Actor.remote()
        try:
            printed = ray.get(actor.error_in_weakref_callback.remote(quiet, error))
        finally:
            ray.kill(actor)
        assert (expected in printed) if expected else printed == "", (quiet, error, printed)


def test_a_worker_warms_up_without_fixing_its_devices_or_loading_what_trials_do_not_use():
    """`warm_up` imports and configures TensorFlow; TensorFlow reads CUDA_VISIBLE_DEVICES
    once, when it first lists its devices, so the warm-up must leave that listing to the
    process's first trial (a GPU trial's cards, or a trainer's none), or a trial could see
    (and use) every card of its node. Nor does it load scikit-learn or matplotlib, which
    Keras would import for its wrappers and galleries; a user's code in the trial still can."""
    code = ("import sys\nfrom lrsweep.run.trial import warm_up\nwarm_up()\n"
            "from tensorflow.python.eager import context\nprint(context.context()._physical_devices)\n"
            "print(sorted(name for name in ('sklearn', 'matplotlib') if name in sys.modules))\n"
            "import sklearn.datasets, matplotlib.pyplot, keras\n"
            "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
            "print(model(sklearn.datasets.load_iris().data[:4, :3]).shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-3:] == ["None", "[]", "(4, 2)"]


def test_fit_schedule_confirm_trains_the_closest_fit_as_the_trial_trained(ray_session, tmp_path):
    """`fit-schedule --confirm`: the closest family, trained again from what the store kept
    of the trial (data, model, optimizer, epochs, seed), follows the trial's own rates, and
    more seeds compare the two schedules run for run."""
    sweep = Sweep(name="traced", dataset="digits", subsample=300, max_epochs=4, confirm_seeds=0,
                  results=str(tmp_path), configs=[{"family": "step", "initial_lr": 0.2, "drop": 0.5, "epochs_drop": 2}])
    launch(sweep, print_fn=lambda line: None)
    original = read_frame(str(tmp_path), "trials").iloc[0]
    done = lrsweep("fit-schedule", "--dataset", "digits", "--results", str(tmp_path), "--confirm",
                   "--confirm-seeds", "2", "--address", ray_session, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[2].split()[:3] == ["step", "0.00%", "0.00%"]
    trials, epochs = read_frame(str(tmp_path), "trials"), read_frame(str(tmp_path), "epochs")
    fitted = trials[trials["sweep"] != original["sweep"]]
    assert fitted["sweep"].str.startswith(f"fit-{original['trial_id']}-").all()
    assert sorted(fitted["stage"]) == ["confirm", "confirm", "search"] and sorted(fitted["seed"]) == [0, 1, 2]
    assert set(fitted["family"]) == {"step"} and set(fitted["status"]) == {"completed"}
    again = fitted[fitted["stage"] == "search"].iloc[0]
    assert json.loads(again["params"]) == pytest.approx(json.loads(original["params"]), rel=1e-5)

    def lrs(trial):
        return epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")["lr"].to_numpy()
    np.testing.assert_allclose(lrs(again), lrs(original), rtol=1e-5)
    assert (again["model"], again["batch_size"], again["max_epochs"]) == (
        original["model"], original["batch_size"], original["max_epochs"])
    lines = done.stdout.splitlines()
    comparison = lines[next(i for i, line in enumerate(lines) if line.startswith("trained again:")):]
    assert comparison[0].endswith("(seeds both ran: 0)")
    assert comparison[2].split()[:4] == ["trial", original["trial_id"], "(sgd/step)", "1"]
    assert comparison[3].split()[:3] == ["fitted", "sgd/step", "3"]
    assert comparison[4].startswith("(the trial's own schedule ran with seed 0 only")
