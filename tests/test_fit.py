"""`fit-schedule`: every family fitted to a rate trace, closest first. The traces come from
the SPEC's formulas written out plainly (tests/reference.py), not from lrsweep's classes."""

import json
import math

import numpy as np
import pytest

from lrsweep.results.store import write_rows
from lrsweep.results.fitting import _number
from lrsweep.schedules import FAMILIES, check_schedule
from lrsweep.schedules.fit import FITTED, fit_families, fit_family
from tests import reference
from tests.conftest import assert_refused, lrsweep
from tests.test_schedules import EXAMPLES

E = 20
# Each fitted family's own curve, with parameters away from their defaults.
OWN_CURVES = {name: EXAMPLES[name] for name in FITTED}
PLATEAU = {"initial_lr": 0.2, "factor": 0.3, "patience": 4}
# What a plateau trial of 12 epochs did when its validation loss stalled every four.
STORED_EPOCHS = 12
STALLED = [reference.rate("step", {"initial_lr": 0.2, "drop": 0.3, "epochs_drop": 4}, e, STORED_EPOCHS)
           for e in range(STORED_EPOCHS)]


def test_every_family_but_plateau_is_fitted():
    assert set(FITTED) == set(FAMILIES) - {"plateau"}


@pytest.mark.parametrize("family", OWN_CURVES)
def test_a_familys_own_curve_is_fitted_to_within_a_tenth_of_a_percent(family):
    params = OWN_CURVES[family]
    rates = [reference.rate(family, params, e, E) for e in range(E)]
    fit = fit_family(family, rates, E)
    assert fit["error"] < 1e-3 and fit["max_error"] < 1e-3, fit
    fitted = [reference.rate(family, fit["params"], e, E) for e in range(E)]
    assert fitted == pytest.approx(rates, rel=1e-3)


@pytest.mark.parametrize("family, params, epochs", [
    ("step", {"initial_lr": 0.1, "drop": 0.1, "epochs_drop": 30}, 90),  # the textbook ImageNet step
    ("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 20}, 100),
    ("cyclical", {"base_lr": 0.001, "max_lr": 0.05, "step_size": 15, "mode": "exp_range", "gamma": 0.97}, 50),
    ("cyclical", {"base_lr": 0.001, "max_lr": 0.05, "step_size": 25, "mode": "triangular", "gamma": 1.0}, 100),
    ("cosine", {"initial_lr": 0.1, "alpha": 0.01, "warmup_epochs": 30}, 100),
])
def test_a_long_runs_own_curve_is_fitted_with_its_own_epoch_counts(family, params, epochs):
    """Epoch counts past a dozen (a drop every 30 epochs of 90): the grid tried every value
    up to 12, then a sparse ladder (16, 21, 28, 38: not 30), and judged them at a drop of 0.5
    or a guessed gamma before fitting, so a step trace of its own came out 81% off."""
    rates = [reference.rate(family, params, e, epochs) for e in range(epochs)]
    fit = fit_family(family, rates, epochs)
    assert fit["error"] < 1e-3, fit
    assert {k: v for k, v in fit["params"].items() if not isinstance(v, float)} == {
        k: v for k, v in params.items() if not isinstance(v, float)}


def test_every_family_is_fitted_closest_first_with_errors_as_factors_off_the_trace():
    # A plateau curve has no closed form among the families: its first drop comes a
    # patience later than the next ones.
    rates = reference.plateau_rates(PLATEAU, E)
    fits = fit_families(rates, E)
    assert {fit["family"] for fit in fits} == set(FITTED)
    assert [fit["error"] for fit in fits] == sorted(fit["error"] for fit in fits)
    for fit in fits:
        off = [math.log(reference.rate(fit["family"], fit["params"], e, E) / rates[e]) for e in range(E)]
        assert fit["error"] == pytest.approx(math.expm1(math.sqrt(sum(x * x for x in off) / E)), rel=1e-3)
        assert fit["max_error"] == pytest.approx(math.expm1(max(abs(x) for x in off)), rel=1e-3)
    assert fits[0]["error"] > 0.1


def test_a_trace_several_families_draw_exactly_is_the_simplest_ones():
    """A flat trace (a plateau trial that never dropped, a constant one): every family draws
    it to float noise; the closest named is constant, not a five-parameter cyclical schedule
    that stays flat, and a halving every 2 epochs is step's, not one_cycle's."""
    flat = float(np.float32(0.1370383))  # as the store holds a trial's rate
    assert fit_families([flat] * 2, 2)[0]["family"] == "constant"
    assert fit_families([flat] * 10, 10)[0]["family"] == "constant"
    halving = [reference.rate("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 2}, e, E) for e in range(E)]
    assert fit_families(halving, E)[0]["family"] == "step"


def test_a_trace_the_flat_curves_fit_best_still_gets_their_fits():
    """A rising trace (one-cycle's first epochs): exponential and time_based fit it best with
    k and decay towards 0, which must stay a value float32 holds (1e-50 is 0 there, a bound
    the family refuses), or the family fell out of the list without a word."""
    params = {"max_lr": 0.16, "pct_start": 0.3, "div": 25.0, "final_div": 1e4}
    rates = [reference.rate("one_cycle", params, e, 6) for e in range(6)]
    assert {fit["family"] for fit in fit_families(rates, 6)} == set(FITTED)


def test_of_equally_close_fits_the_trials_own_family_comes_first():
    """A time_based trace is exponential's to 0.01% too, with as many fitted parameters
    (time_based's decay_unit is fixed, not fitted): the trial's own family is named."""
    rates = [reference.rate("time_based", {"initial_lr": 0.022, "decay": 0.0063}, e, 6) for e in range(6)]
    assert fit_families(rates, 6, own="time_based")[0]["family"] == "time_based"
    exponential = [reference.rate("exponential", {"initial_lr": 0.022, "k": 0.0063}, e, 6) for e in range(6)]
    assert fit_families(exponential, 6, own="exponential")[0]["family"] == "exponential"


@pytest.mark.parametrize("rates", [[0.05] * 10, [0.1, 0.1, 0.1, 0.1, 0.11], [0.3, 0.001]])
def test_every_printed_fit_is_a_valid_command_line(rates):
    """A flat trace draws cyclical's base_lr onto its max_lr, a last rise cosine's alpha
    onto 1: what is printed must still be what `schedule` takes."""
    for fit in fit_families(rates, len(rates)):
        family = FAMILIES[fit["family"]]
        typed = {k: family.param(k).parse(_number(v)) for k, v in fit["params"].items()}
        assert check_schedule(fit["family"], typed, len(rates)) == fit["params"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("results"))
    params = {**PLATEAU, "min_lr": 0.0}
    trial = {"trial_id": "p1", "family": "plateau", "optimizer": "sgd", **params, "params": json.dumps(params),
             "status": "completed", "epochs": STORED_EPOCHS, "max_epochs": STORED_EPOCHS, "metric": "val_accuracy", "metric_mode": "max",
             "final_val_accuracy": 0.9}
    settings = json.dumps({"dataset": "digits", "max_epochs": STORED_EPOCHS})
    short = {**trial, "trial_id": "short", "final_val_accuracy": 0.4, "epochs": 5, "status": "early_stopped",
             "training_settings": settings}
    flat = {**trial, "trial_id": "flat", "family": "constant", "params": json.dumps({"initial_lr": 0.05}),
            "final_val_accuracy": 0.3}
    write_rows(root, "trials", "digits", "s", [trial, {**trial, "trial_id": "none", "final_val_accuracy": 0.5}, short,
                                               flat])
    write_rows(root, "epochs", "digits", "s", [{"trial_id": trial_id, "epoch": e + 1, "lr": lr, "val_accuracy": 0.9}
                                               for trial_id, trace in (("p1", STALLED), ("short", STALLED[:5]),
                                                                       ("flat", [0.05] * STORED_EPOCHS))
                                               for e, lr in enumerate(trace)])
    return root


def test_fit_schedule_prints_the_closest_family_first_and_a_preview_command_that_gives_the_trace(results):
    done = lrsweep("fit-schedule", "--dataset", "digits", "--results", results)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith("trial p1 of sweep s (sgd/plateau, val_accuracy 0.9000)")
    assert lines[2].split()[:3] == ["step", "0.00%", "0.00%"]
    assert "drop=0.3, epochs_drop=4" in lines[2]
    command = lines[-1].split("preview it: lrsweep ", 1)[1].split()
    preview = lrsweep(*command, "--csv")
    assert preview.returncode == 0, preview.stderr
    previewed = [float(line.split(",")[1]) for line in preview.stdout.splitlines()[1:]]
    assert previewed == pytest.approx(STALLED, rel=1e-5)


def test_fit_schedule_json_holds_the_trace_and_every_fit(results):
    done = lrsweep("fit-schedule", "--dataset", "digits", "--results", results, "--trial", "p1", "--format", "json")
    answer = json.loads(done.stdout)
    assert answer["trial_id"] == "p1" and answer["epochs"] == STORED_EPOCHS
    assert answer["rates"] == pytest.approx(STALLED)
    assert [fit["family"] for fit in answer["fits"]][0] == "step"
    assert len(answer["fits"]) == len(FITTED) and answer["not_fitted"] == []


def test_fit_schedule_names_the_families_it_leaves_out(results):
    """A flat trace: cyclical's closest curve has its base_lr at its max_lr, which the family
    refuses; the table says so, not only leaves it out."""
    done = lrsweep("fit-schedule", "--dataset", "digits", "--results", results, "--trial", "flat")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.split("\nerror: ")[0].splitlines()[2:]}
    assert "cyclical" not in listed and len(listed) == len(FITTED) - 1
    assert "not listed: cyclical, whose closest curves lie outside their bounds" in done.stdout
    answer = json.loads(lrsweep("fit-schedule", "--dataset", "digits", "--results", results, "--trial", "flat",
                                "--format", "json").stdout)
    assert answer["not_fitted"] == ["cyclical"]


@pytest.mark.parametrize("args, named", [
    (["--dataset", "cifar10"], "dataset='cifar10'"),
    (["--dataset", "digits", "--trial", "zz"], "trial='zz'"),
    (["--dataset", "digits", "--trial", "none"], "trial='none'"),
    (["--dataset", "digits", "--confirm"], "trial='p1'"),  # stored without its training settings
    (["--dataset", "digits", "--trial", "short", "--confirm"], "trial='short'"),  # stopped at epoch 5 of 12
    (["--dataset", "digits", "--confirm", "--format", "json"], "format='json'"),
])
def test_fit_schedule_bad_input_is_one_line_and_exit_2(results, args, named):
    done = lrsweep("fit-schedule", "--results", results, *args)
    assert_refused(done, named)
