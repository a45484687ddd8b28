"""Schedule families: the SPEC's numeric checks, every family against its formula in both
granularities, and one contract test over every family (construct, finite positive values,
survive a keras.saving round trip inside a saved model)."""

import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from lrsweep.errors import LrsweepError
from lrsweep.schedules import FAMILIES, build_schedule, check_schedule
from lrsweep.schedules.curves import ProgressSchedule
from lrsweep.schedules.preview import epoch_rates
from tests.reference import plateau_rates, rate

# One example parameter set per family, exercising non-default arguments.
EXAMPLES = {
    "constant": {"initial_lr": 0.05},
    "time_based": {"initial_lr": 0.1, "decay": 0.2},
    "step": {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 3},
    "exponential": {"initial_lr": 0.5, "k": 0.1},
    "polynomial": {"initial_lr": 0.5, "power": 2.0, "end_lr": 0.01},
    "cosine": {"initial_lr": 0.2, "alpha": 0.1, "warmup_epochs": 3},
    "cyclical": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "mode": "triangular2"},
    "one_cycle": {"max_lr": 0.3, "pct_start": 0.25, "div": 10.0, "final_div": 100.0},
    "plateau": {"initial_lr": 0.1, "factor": 0.5, "patience": 2, "min_lr": 0.001},
}
EPOCHS = 16


def test_every_family_has_an_example():
    assert set(EXAMPLES) == set(FAMILIES)


def test_step_table_from_the_spec():
    rates = epoch_rates("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 10}, epochs=50)
    for epoch, want in [(1, 0.1), (10, 0.1), (11, 0.05), (20, 0.05), (21, 0.025), (31, 0.0125), (41, 0.00625),
                        (50, 0.00625)]:
        assert rates[epoch - 1] == pytest.approx(want, rel=1e-6)


def test_time_based_per_step_is_keras_2_decay_and_per_epoch_is_not():
    params = {"initial_lr": 0.1, "decay": 0.01}
    per_step = epoch_rates("time_based", {**params, "decay_unit": "step"}, epochs=2, steps_per_epoch=250)
    per_epoch = epoch_rates("time_based", params, epochs=2, steps_per_epoch=250)
    assert per_step[1] == pytest.approx(0.0286, abs=1e-4)
    assert per_epoch[1] == pytest.approx(0.099, abs=1e-4)


def test_exponential_at_epoch_index_10():
    rates = epoch_rates("exponential", {"initial_lr": 0.5, "k": 0.1}, epochs=11)
    assert rates[10] == pytest.approx(0.5 * math.exp(-1), rel=1e-6)
    assert rates[10] == pytest.approx(0.1839, abs=1e-4)


def test_polynomial_linear_over_100_epochs():
    rates = epoch_rates("polynomial", {"initial_lr": 0.5, "power": 1.0}, epochs=100)
    assert rates[50] == pytest.approx(0.25, rel=1e-5)
    assert rates[99] == pytest.approx(0.005, rel=1e-4)


@pytest.mark.parametrize("family", [f for f in EXAMPLES if f != "plateau"])
@pytest.mark.parametrize("granularity", ["epoch", "step"])
def test_family_follows_its_formula(family, granularity):
    spe = 7
    schedule, callbacks = build_schedule(family, EXAMPLES[family], steps_per_epoch=spe, epochs=EPOCHS,
                                         granularity=granularity)
    assert callbacks == []
    full = check_schedule(family, EXAMPLES[family], EPOCHS)
    for step in range(0, EPOCHS * spe, 3):
        t = step / spe if granularity == "step" else step // spe
        assert float(schedule(step)) == pytest.approx(rate(family, full, t, EPOCHS), rel=1e-5, abs=1e-9), step


@pytest.mark.parametrize("family", [f for f in EXAMPLES if f != "plateau" and isinstance(
    build_schedule(f, EXAMPLES[f], steps_per_epoch=70001, epochs=300)[0], ProgressSchedule)])
def test_an_epochs_rate_holds_from_its_first_step_past_2_to_the_24_steps(family):
    """An ImageNet-sized run (70,001 steps per epoch, 300 epochs: 21 million steps), where a
    float32 step is no longer exact: each epoch's first step has that epoch's rate. (Keras'
    own classes, which lrsweep trains on where they are exact, compute in float32 as a plain
    Keras script does, and are left out.)"""
    spe, epochs = 70001, 300
    schedule, _ = build_schedule(family, EXAMPLES[family], steps_per_epoch=spe, epochs=epochs)
    full = check_schedule(family, EXAMPLES[family], epochs)
    for epoch in (239, 240, 241, 299):
        expected = rate(family, full, epoch, epochs)
        assert float(schedule(keras.Variable(epoch * spe, dtype="int64"))) == pytest.approx(expected, rel=1e-5), epoch
    # early_stopping="budget": a rung of 100 epochs runs the 300-epoch schedule three epochs per epoch
    rung, _ = build_schedule(family, EXAMPLES[family], steps_per_epoch=spe, epochs=epochs, over=100)
    for epoch in (79, 80, 81, 99):
        expected = rate(family, full, 3 * epoch, epochs)
        assert float(rung(keras.Variable(epoch * spe, dtype="int64"))) == pytest.approx(expected, rel=1e-5), epoch


@pytest.mark.parametrize("family", [f for f in EXAMPLES if f != "plateau"])
@pytest.mark.parametrize("granularity", ["epoch", "step"])
def test_a_rungs_schedule_is_the_whole_schedule_fitted_to_its_epochs(family, granularity):
    """early_stopping="budget": a rung of 5 epochs runs the 16-epoch schedule through: at
    step s the formula's rate at s * 16 / 5 steps (floored to the formula's epoch, per
    epoch), so even a 1-epoch rung trains the whole curve; and the stretched schedule
    survives Keras' serialization."""
    spe = 7
    for over in (5, 1):
        schedule, _ = build_schedule(family, EXAMPLES[family], steps_per_epoch=spe, epochs=EPOCHS,
                                     granularity=granularity, over=over)
        full = check_schedule(family, EXAMPLES[family], EPOCHS)
        for step in range(0, over * spe):
            t = step * EPOCHS / over / spe
            expected = rate(family, full, t if granularity == "step" else math.floor(t + 1e-9), EPOCHS)
            assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9), (over, step)
        again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
        assert [float(again(s)) for s in range(over * spe)] == [float(schedule(s)) for s in range(over * spe)]


def test_a_rungs_per_step_time_based_decay_still_decays_every_step():
    """Keras 2's `decay` (decay_unit="step") changes the rate every optimizer step, also
    when the schedule is stretched over a rung."""
    params = {"initial_lr": 0.1, "decay": 0.01, "decay_unit": "step"}
    schedule, _ = build_schedule("time_based", params, steps_per_epoch=250, epochs=20, over=2)
    assert [float(schedule(s)) for s in (0, 1, 2)] == pytest.approx([0.1 / (1 + 0.01 * s * 10) for s in (0, 1, 2)])


def test_a_rungs_plateau_waits_the_patience_fitted_to_its_epochs():
    """Plateau's patience is in epochs: a rung of a quarter of the epochs waits a quarter
    as long (at least one epoch)."""
    params = {**EXAMPLES["plateau"], "patience": 8}
    _, callbacks = build_schedule("plateau", params, steps_per_epoch=5, epochs=EPOCHS, over=4)
    assert callbacks[0].patience == 2
    _, callbacks = build_schedule("plateau", params, steps_per_epoch=5, epochs=EPOCHS, over=1)
    assert callbacks[0].patience == 1


def test_plateau_preview_is_keras_reduce_lr_on_plateau():
    rates = epoch_rates("plateau", EXAMPLES["plateau"], epochs=EPOCHS)
    assert rates == pytest.approx(plateau_rates(EXAMPLES["plateau"], EPOCHS), rel=1e-6)
    assert rates[0] > rates[-1] >= EXAMPLES["plateau"]["min_lr"]


def test_plateau_is_a_callback_on_a_float_rate():
    learning_rate, callbacks = build_schedule("plateau", EXAMPLES["plateau"], steps_per_epoch=5, epochs=EPOCHS)
    assert learning_rate == 0.1
    assert [type(c).__name__ for c in callbacks] == ["ReduceLROnPlateau"]


@pytest.mark.parametrize("family", [f for f in EXAMPLES if f != "plateau"])
def test_contract_finite_positive_and_survives_a_saved_model(family, tmp_path):
    schedule, _ = build_schedule(family, EXAMPLES[family], steps_per_epoch=5, epochs=EPOCHS)
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    values = np.array([float(schedule(s)) for s in range(EPOCHS * 5)])
    assert np.all(np.isfinite(values)) and np.all(values > 0)

    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert again.get_config() == schedule.get_config()

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    model.fit(np.ones((10, 3)), np.ones((10, 1)), epochs=2, batch_size=5, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras").optimizer.learning_rate
    assert float(loaded) == pytest.approx(float(schedule(4)), rel=1e-6)  # 4 steps taken


def test_builtin_keras_classes_where_they_are_exact():
    kinds = {f: type(build_schedule(f, EXAMPLES[f], steps_per_epoch=5, epochs=EPOCHS, granularity=g)[0]).__name__
             for f in ("time_based", "step", "exponential") for g in ("epoch", "step")}
    assert set(kinds.values()) <= {"InverseTimeDecay", "ExponentialDecay"}
    step_poly = build_schedule("polynomial", EXAMPLES["polynomial"], steps_per_epoch=5, epochs=EPOCHS,
                               granularity="step")[0]
    assert type(step_poly).__name__ == "PolynomialDecay"
    assert step_poly.end_learning_rate == 0.01  # not Keras' default 1e-4


@pytest.mark.parametrize("family, params, words", [
    ("step", {"initial_lr": 0.1, "drop": 1.5, "epochs_drop": 10}, ["drop", "1.5"]),
    ("step", {"initial_lr": -1, "drop": 0.5, "epochs_drop": 10}, ["initial_lr", "-1"]),
    ("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 0}, ["epochs_drop", "0"]),
    ("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 2.5}, ["epochs_drop", "2.5"]),
    ("step", {"initial_lr": 0.1, "drop": 0.5}, ["epochs_drop", "Missing"]),
    ("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 2, "k": 1.0}, ["k", "Unknown"]),
    ("exponential", {"initial_lr": 0.1, "k": 0}, ["k", "0"]),
    ("time_based", {"initial_lr": 0.1, "decay": 0.1, "decay_unit": "batch"}, ["decay_unit", "batch"]),
    ("polynomial", {"initial_lr": 0.1, "power": -2}, ["power", "-2"]),
    ("cosine", {"initial_lr": 0.1, "alpha": 1.0}, ["alpha", "1.0"]),
    ("cosine", {"initial_lr": 0.1, "warmup_epochs": 16}, ["warmup_epochs", "16"]),
    ("cyclical", {"base_lr": 0.2, "max_lr": 0.1, "step_size": 2}, ["base_lr", "max_lr", "0.2"]),
    ("cyclical", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "gamma": 1.5}, ["gamma", "1.5"]),
    ("one_cycle", {"max_lr": 0.1, "div": 1.0}, ["div", "1.0"]),
    ("one_cycle", {"max_lr": 0.1, "pct_start": 1.0}, ["pct_start", "1.0"]),
    ("plateau", {"initial_lr": 0.1, "factor": 1.0}, ["factor", "1.0"]),
    ("plateau", {"initial_lr": 0.1, "patience": 0}, ["patience", "0"]),
    ("plateau", {"initial_lr": 0.1, "min_lr": -0.1}, ["min_lr", "-0.1"]),
    ("nope", {}, ["nope", "constant", "one_cycle"]),
    ("constant", {"initial_lr": 10 ** 400}, ["initial_lr", "1000000", "(401 digits)"]),  # past a float
    ("cyclical", {"base_lr": 10 ** 400, "max_lr": 0.1, "step_size": 2}, ["base_lr", "1000000"]),
    ("constant", {"initial_lr": 1e-320}, ["initial_lr", "1e-320", "float32"]),  # Keras would train at 0
    ("constant", {"initial_lr": 1e39}, ["initial_lr", "1e+39", "float32"]),  # ... at inf
    ("polynomial", {"initial_lr": 0.1, "power": 1.0, "end_lr": 1e39}, ["end_lr", "1e+39", "3.4e38"]),  # nan
    ("plateau", {"initial_lr": 0.1, "min_lr": 1e39}, ["min_lr", "1e+39", "float32"]),
])
def test_bad_parameters_name_the_field_and_the_value(family, params, words):
    with pytest.raises(LrsweepError) as info:
        check_schedule(family, params, EPOCHS)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_numpy_numbers_are_the_numbers_they_are():
    """A sweep file that computes its values with numpy (np.int64 from np.arange, np.float32)."""
    full = check_schedule("step", {"initial_lr": np.float32(0.5), "drop": np.float64(0.5), "epochs_drop": np.int64(2)},
                          EPOCHS)
    assert full["epochs_drop"] == 2 and type(full["epochs_drop"]) is int and type(full["initial_lr"]) is float
    with pytest.raises(LrsweepError, match="epochs_drop"):
        check_schedule("step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": np.float64(2.0)}, EPOCHS)


def test_parameters_are_checked_without_keras():
    code = ("import sys; from lrsweep.schedules import check_schedule; "
            "check_schedule('step', {'initial_lr': 0.1, 'drop': 0.5, 'epochs_drop': 2}, 10); "
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
