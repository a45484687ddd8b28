"""`find-lr`, the learning-rate range test: its arithmetic on known curves, and the command
on the real ionosphere data as a user runs it."""

import re

import numpy as np
import pytest

from lrsweep.results.store import read_frame
from lrsweep.run.find_lr import END, SMOOTHING, START, STEPS, smoothed, suggestions
from tests.conftest import TEST_DATA, assert_refused, lrsweep

PNG = b"\x89PNG\r\n\x1a\n"


def test_smoothing_is_bias_corrected_and_lags_a_jump():
    assert np.allclose(smoothed([2.0] * 5), 2.0)  # no pull towards zero at the start
    losses = [1.0] * 50 + [5.0] * 5
    # each value is the mean of the losses so far weighted 0.98 ** age (written out here,
    # independently of the recursion): a jump moves it by only a fraction
    for n in (1, 50, 55):
        weights = SMOOTHING ** np.arange(n)[::-1]
        assert smoothed(losses)[n - 1] == pytest.approx(np.dot(weights, losses[:n]) / weights.sum())
    assert smoothed(losses)[-1] == pytest.approx(1.0 + 4.0 * (1 - SMOOTHING ** 5) / (1 - SMOOTHING ** 55))


def test_suggestions_find_the_steepest_fall_and_a_tenth_of_the_minimum():
    lrs = np.geomspace(START, END, 200)
    x = np.log10(lrs)
    # falls fastest at lr 1e-3, lowest at lr 0.1, then climbs
    loss = 3 - 2 / (1 + np.exp(-3 * (x + 3))) + 5 * np.maximum(0, x + 1) ** 2
    steepest, tenth = suggestions(lrs, loss)
    step = (END / START) ** (1 / 199)
    assert 1e-3 / step <= steepest <= 1e-3 * step
    assert 0.01 / 1.3 <= tenth <= 0.01 * 1.3


def test_suggestions_read_past_the_noise_of_the_first_batches():
    """Batch losses 4% noisy around a curve falling fastest at lr 0.01: the average of the
    first two or three losses swings more against log rate than the real fall, and the
    steepest descent was read there (a rate near 1e-6 for most draws)."""
    rng = np.random.default_rng(0)
    lrs = np.geomspace(START, END, STEPS)
    x = np.log10(lrs)
    curve = 0.7 - 0.5 / (1 + np.exp(-3 * (x + 2))) + 5 * np.maximum(0, x + 0.5) ** 2
    for _ in range(50):
        steepest, tenth = suggestions(lrs, smoothed(curve * (1 + rng.normal(0, 0.04, STEPS))))
        assert 1e-3 <= steepest <= 0.1 and START <= tenth <= END, (steepest, tenth)


def test_a_curve_that_never_falls_suggests_no_rate():
    """Lowest at its start: no steepest descent, and no tenth of a rate below the range."""
    lrs = np.geomspace(START, END, STEPS)
    assert np.isnan(suggestions(lrs, np.linspace(1.0, 3.0, STEPS))).all()


def test_find_lr_stores_each_optimizers_curve_and_suggests_two_rates(tmp_path):
    done = lrsweep("find-lr", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(tmp_path / "r"),
                   "--plot", str(tmp_path / "range.png"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_frame(str(tmp_path / "r"), "lr_range")
    assert set(rows["optimizer"]) == {"sgd", "adam"}  # the sweep's optimizer and its adam family's
    assert (rows["dataset"] == "ionosphere").all()
    for optimizer, curve in rows.groupby("optimizer"):
        curve = curve.sort_values("step")
        assert list(curve["step"]) == list(range(len(curve))) and len(curve) >= 20
        assert curve["lr"].iloc[0] == pytest.approx(START) and (np.diff(np.log(curve["lr"])) > 0).all()
        assert np.isfinite(curve["smoothed_loss"]).all()
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"{optimizer}:"))
        rates = [float(rate) for rate in re.findall(r"at lr (\S+?)[,;]?(?:\s|$)", line)]
        assert len(rates) == 2 and all(START <= rate <= curve["lr"].max() for rate in rates), line
    assert (tmp_path / "range.png").read_bytes()[:8] == PNG


def test_find_lr_answers_a_missing_dataset_with_one_line(tmp_path):
    done = lrsweep("find-lr", "sweeps/ionosphere.py", "--dataset", "csv:" + str(tmp_path / "none.csv"),
                   "--results", str(tmp_path / "r"))
    assert_refused(done, "Dataset file", f"(from 'csv:{tmp_path / 'none.csv'}')")
    assert not (tmp_path / "r").exists()


def test_find_lr_answers_a_results_path_it_cannot_write_before_training(tmp_path):
    """The rows are stored as each range test ends: a results path that is a file is
    refused before any trains, and left as it was."""
    taken = tmp_path / "taken"
    taken.write_text("mine")
    done = lrsweep("find-lr", "sweeps/ionosphere.py", "--data-dir", TEST_DATA, "--results", str(taken))
    assert_refused(done, f"results={str(taken)!r}")
    assert taken.read_text() == "mine"


def test_find_lr_says_so_where_the_first_loss_is_not_a_number_and_ignores_tunes_storage(tmp_path):
    """Features of 3e38 left unscaled: the first batch's loss overflows, so there is no
    curve: one line saying so, nothing stored, no traceback (rows[0] of none). The sweep's
    `storage` (Tune's, for a cluster: here below a file) is not find-lr's to check."""
    rows = "\n".join(f"{3e38 * (i % 3)},{3e38 * (i % 5)},{i % 2}" for i in range(40))
    (tmp_path / "huge.csv").write_text(f"a,b,label\n{rows}\n")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "huge.py").write_text(
        "from lrsweep import Sweep\n"
        f"SWEEP = Sweep(name='huge', dataset='csv:{tmp_path / 'huge.csv'}', scale='none', max_epochs=2,\n"
        f"              configs=[{{'family': 'constant', 'initial_lr': 0.1}}], storage='{tmp_path / 'a-file' / 'tune'}')\n")
    picture = tmp_path / "range.png"
    done = lrsweep("find-lr", str(tmp_path / "huge.py"), "--results", str(tmp_path / "r"), "--plot", str(picture),
                   timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "sgd: the loss of the first batch, at lr 1e-06, is not a finite number: no curve to read (are the features "
        "scaled? the sweep's `scale`)", f"no curve to draw: {picture} is not written"], done.stdout
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "r").glob("lr_range/**/*.parquet")) and not picture.exists()  # was an empty picture
    # 1e30: the first loss is a number and the next is not: a curve of one step, no steepest
    # descent to point at (it said "at lr nan")
    rows = "\n".join(f"{1e30 * (i % 3)},{1e30 * (i % 5)},{i % 2}" for i in range(40))
    (tmp_path / "large.csv").write_text(f"a,b,label\n{rows}\n")
    done = lrsweep("find-lr", str(tmp_path / "huge.py"), "--dataset", f"csv:{tmp_path / 'large.csv'}", "--results",
                   str(tmp_path / "r"), timeout=300)
    assert done.returncode == 0 and "nan" not in done.stdout, done.stdout + done.stderr[-2000:]
    assert "sgd: 1 step from lr 1e-06 to 1e-06; no rate to suggest" in done.stdout
