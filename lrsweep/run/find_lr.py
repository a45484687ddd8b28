"""`find-lr`: the learning-rate range test (Leslie Smith's), once per optimizer of a sweep.

The sweep's model trains from its seeded weights with a rate that grows exponentially every
step, from `START` to `END` over at most `STEPS` steps, one batch per step; the loss of
each step is kept, smoothed (an exponential moving average, bias-corrected), and the test
stops when the smoothed loss passes `DIVERGED` times its minimum. Two rates are suggested
from the smoothed curve past its first `SKIPPED` steps (as fastai's `lr_find` skips them:
there the average holds a few batches' losses, and their noise looks steeper than any real
fall): where it falls fastest (against log rate), and a tenth of the rate at its minimum.
It runs here, in this process (two short trainings; no Ray).
"""

import math
import time

import numpy as np

START, END, STEPS = 1e-6, 10.0, 200
SMOOTHING = 0.98
DIVERGED = 4.0
SKIPPED = STEPS // 10


def smoothed(losses, beta=SMOOTHING):
    """The bias-corrected exponential moving average of `losses`."""
    out, average = [], 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return np.array(out)


def suggestions(lrs, smooth):
    """(steepest, minimum / 10): the rate where the smoothed loss falls fastest against log
    rate before its minimum, and a tenth of the rate at the minimum, both past the first
    `SKIPPED` steps; NaN for both where the curve past them is lowest in its first two steps
    (it never fell there), or holds fewer than three."""
    lrs, smooth = np.asarray(lrs)[SKIPPED:], np.asarray(smooth)[SKIPPED:]
    lowest = int(np.argmin(smooth)) if len(smooth) >= 3 else 0
    if lowest < 2:
        return math.nan, math.nan
    slope = np.gradient(smooth[: lowest + 1], np.log(lrs[: lowest + 1]))
    return float(lrs[int(np.argmin(slope))]), float(lrs[lowest] / 10)


def range_test(optimizer_name, data, setup, keras):
    """Rows (step, lr, loss, smoothed_loss) of one optimizer's range test."""
    from lrsweep.models import build_model, loss_for
    from lrsweep.run.trial import batches, make_optimizer, release_readers, seed_trial, thread_count

    keras.backend.clear_session()
    seed_trial(setup["seed"])
    rate = keras.optimizers.schedules.ExponentialDecay(START, decay_steps=1,
                                                       decay_rate=(END / START) ** (1 / (STEPS - 1)))
    optimizer = make_optimizer(keras, optimizer_name, rate, setup)
    x, y = data["x_train"], data["y_train"]
    model = build_model(setup["model"], setup["model_args"], x.shape[1:], data["num_classes"])
    model.compile(optimizer=optimizer, loss=loss_for(data["num_classes"]))
    losses = []

    class Watch(keras.callbacks.Callback):
        """An epoch here is one step: its loss is that batch's alone."""

        def on_epoch_end(self, epoch, logs=None):
            losses.append(float(logs["loss"]))
            curve = smoothed(losses)
            if not math.isfinite(losses[-1]) or curve[-1] > DIVERGED * curve.min():
                self.model.stop_training = True

    pipeline = batches(x, y, setup["batch_size"], shuffle=True, seed=setup["seed"],
                       threads=thread_count(setup["cpus"]), repeat=True)
    try:
        model.fit(pipeline, epochs=STEPS, steps_per_epoch=1, shuffle=False, verbose=0, callbacks=[Watch()])
    finally:
        release_readers()
    losses = [loss for loss in losses if math.isfinite(loss)]  # the test stopped at the first that is not
    return [{"optimizer": optimizer_name, "step": step, "lr": float(rate(step)), "loss": loss,
             "smoothed_loss": float(s)} for step, (loss, s) in enumerate(zip(losses, smoothed(losses)))]


def find_lr(sweep, print_fn=print):
    """Run the range test of each optimizer of `sweep`, store the rows in its results under
    `sweep=<name>-find-lr-<time>` and return {optimizer: (rows, steepest, minimum / 10)}."""
    from lrsweep.results import store
    from lrsweep.run.driver import sweep_data, trial_arrays, training_setup
    from lrsweep.run.trial import _configure_tensorflow

    data = sweep_data(sweep)
    setup = training_setup(sweep)
    _configure_tensorflow(sweep.cpus)
    import keras

    optimizers = sorted({arm.optimizer for arm in sweep.arms.values()}, key=lambda o: o != sweep.optimizer)
    arrays = trial_arrays(data)
    name = f"{sweep.name}-find-lr-{time.strftime('%Y%m%d-%H%M%S')}"
    found = {}
    for optimizer in optimizers:  # each one's rows stored as its test ends
        rows = range_test(optimizer, arrays, setup, keras)
        if not rows:
            found[optimizer] = (rows, math.nan, math.nan)
            print_fn(f"{optimizer}: the loss of the first batch, at lr {START:.3g}, is not a finite number: no "
                     f"curve to read (are the features scaled? the sweep's `scale`)")
            continue
        steepest, tenth = suggestions([r["lr"] for r in rows], [r["smoothed_loss"] for r in rows])
        found[optimizer] = (rows, steepest, tenth)
        ran = (f"{optimizer}: {len(rows)} step{'s' * (len(rows) != 1)} from lr {rows[0]['lr']:.3g} to "
               f"{rows[-1]['lr']:.3g}")
        if steepest == steepest:
            # a curve still falling at the range's end has its minimum there, or beyond
            end = (f" (the loss still fell at lr {rows[-1]['lr']:.3g}, the end of the range)"
                   if len(rows) == STEPS and rows[-1]["smoothed_loss"] == min(r["smoothed_loss"] for r in rows) else "")
            print_fn(f"{ran}; steepest descent at lr {steepest:.3g}, minimum loss / 10 at lr {tenth:.3g}{end}")
        elif len(rows) < SKIPPED + 3:
            print_fn(f"{ran}; no rate to suggest: the test ended as the loss diverged within its first {SKIPPED + 3} "
                     f"steps, whose average of a few batches is too noisy to read (the data's scale?)")
        else:
            print_fn(f"{ran}; no rate to suggest: the smoothed loss was lowest at the test's first steps, it never "
                     f"fell (the model diverges from the start? the data's scale?)")
        store.write_rows(sweep.results, "lr_range", data.name, name, rows)
    if any(rows for rows, _, _ in found.values()):
        print_fn(f"stored under {store.partition(sweep.results, 'lr_range', data.name, name)}")
    return found
