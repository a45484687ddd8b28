"""A trial worker keeps its compiled model for its next trial of the same shape.

Tune's reused actors train trial after trial of one architecture and one optimizer, and
a small trial spends much of its time building and tracing its model: on the digits MLP
the first epoch takes about 0.5 s against 0.07 s for each later one. What the traced
training step computes depends on the trial only through the learning rate, so the rate
is made data: a float, or the table of the schedule's rate at every optimizer step
(`RateTable`, a variable that the traced step reads). A later trial of the same shape
(model, input, optimizer, steps per epoch, kind of rate) then trains the kept model, set
to its own initial state: the weights and dropout seeds of a model freshly built with its
seed, the optimizer's variables as they were before any step, and its own rate. It trains
epoch for epoch as it would on a new model.
"""

import keras
import numpy as np
from keras import ops

# A schedule longer than this many optimizer steps (64 MB of float32) is not tabulated:
# its trial trains on the schedule itself, on a model compiled for it alone.
TABLE_STEPS = 1 << 24


class RateTable(keras.optimizers.schedules.LearningRateSchedule):
    """The rate at each optimizer step, read from a table; past its end, its last rate.
    The table is a variable: a later trial assigns its own, and the traced step reads it.

    Example: `RateTable(rate_table(keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5), 2000))`.
    """

    def __init__(self, rates):
        self.values = np.asarray(rates, "float32")
        self.rates = keras.Variable(self.values, trainable=False, name="rate_table")

    def __call__(self, step):
        return ops.take(self.rates, ops.minimum(ops.cast(step, "int32"), self.rates.shape[0] - 1))

    def set(self, rates):
        """Another trial's table, of the same length."""
        self.values = np.asarray(rates, "float32")
        self.rates.assign(self.values)

    def rate_at(self, step):
        """`self(step)` as a Python float, read from the host's copy of the table: a tenth of
        the time of evaluating the schedule in TensorFlow (0.06 ms against 0.5-0.7 ms, once
        an epoch, on a 10-30 ms epoch)."""
        return float(self.values[min(int(step), len(self.values) - 1)])

    def get_config(self):
        return {"rates": self.values.tolist()}


def rate_table(schedule, steps):
    """`schedule`'s rate at optimizer steps 0 .. steps-1, as float32. Keras' schedules and
    lrsweep's curves are elementwise in the step; evaluated over all steps at once, a
    rate can differ from the one-step evaluation in its last bit (vectorized `pow`, `cos`)."""
    rates = ops.convert_to_numpy(ops.cast(schedule(np.arange(steps)), "float32"))
    return np.broadcast_to(rates, (steps,)).copy()


def kept_key(shape, schedule, steps):
    """The key under which `trial_model` keeps the model compiled for `shape` at `schedule`'s
    kind of rate; None for a schedule too long to tabulate, whose model is never kept."""
    if isinstance(schedule, float):
        return shape, "float"
    return (shape, "table", steps) if steps <= TABLE_STEPS else None


def trial_model(kept, shape, fresh, schedule, steps, compile_model):
    """The compiled model a trial trains, at `schedule` (a float, or a schedule tabulated
    over `steps` optimizer steps). `fresh` is the trial's model, built with its seed;
    `compile_model(model, learning_rate)` compiles it; `shape` names what the compiled
    model depends on besides the rate. `kept` (a dict the worker keeps between trials, or
    None) maps each shape and kind of rate to the model compiled for it: the model it
    holds is returned, set to `fresh`'s initial state and to this trial's rate; otherwise
    `fresh` is compiled, and kept. A worker serves one sweep: it keeps one model per
    optimizer and kind of rate (a float for `plateau`, whose Keras callback sets the rate;
    a table for the other families)."""
    key = kept_key(shape, schedule, steps)
    if key is None:
        compile_model(fresh, schedule)
        return fresh
    rate = schedule if isinstance(schedule, float) else rate_table(schedule, steps)
    entry = kept.get(key) if kept is not None else None
    if entry is None:
        table = None if isinstance(rate, float) else RateTable(rate)
        compile_model(fresh, rate if table is None else table)
        if kept is not None:
            fresh.optimizer.build(fresh.trainable_variables)  # its variables' values before any step
            kept[key] = {"model": fresh, "table": table,
                         "optimizer": [ops.convert_to_numpy(v) for v in fresh.optimizer.variables]}
        return fresh
    model = entry["model"]
    for mine, new in zip(model.layers, fresh.layers):
        for variable, value in zip(mine.variables, new.variables):  # weights and dropout seeds
            variable.assign(value)
    for variable, value in zip(model.optimizer.variables, entry["optimizer"]):  # the step count, momenta
        variable.assign(value)
    if entry["table"] is None:
        model.optimizer.learning_rate = rate
    else:
        entry["table"].set(rate)
    return model
