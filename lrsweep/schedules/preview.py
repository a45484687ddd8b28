"""The rate in effect during each epoch of a family, as a trial would see it (imports Keras)."""

import numpy as np

from lrsweep.schedules.registry import build_schedule


def epoch_rates(name, params, *, epochs, steps_per_epoch=1, granularity="epoch"):
    """Learning rate in effect during epochs 1..epochs: read at each epoch's first step.

    `plateau` follows the curve of a validation loss that never improves after the first
    epoch, through Keras' own `ReduceLROnPlateau`.
    """
    learning_rate, callbacks = build_schedule(name, params, steps_per_epoch=steps_per_epoch,
                                              epochs=epochs, granularity=granularity)
    if callbacks:
        return _rates_on_plateau(learning_rate, callbacks, epochs)
    if isinstance(learning_rate, float):
        return [learning_rate] * epochs
    # every epoch's first step in one call of the schedule (one call per epoch took 0.5 ms each)
    return np.asarray(learning_rate(np.arange(epochs, dtype="int64") * steps_per_epoch), dtype="float64").tolist()


def _rates_on_plateau(learning_rate, callbacks, epochs):
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    floor = float(np.float32(max(getattr(callback, "min_lr", 0.0) for callback in callbacks)))
    rates = []
    for e in range(epochs):
        rates.append(float(model.optimizer.learning_rate))
        if rates[-1] <= floor:  # ReduceLROnPlateau goes no lower: the rest of a long preview is this rate
            return rates + [rates[-1]] * (epochs - e - 1)
        for callback in callbacks:
            callback.on_epoch_end(e, {"val_loss": 1.0})
    return rates
