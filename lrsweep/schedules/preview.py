"""The rate in effect during each epoch of a family, as a trial would see it (imports Keras)."""

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
    return [float(learning_rate(e * steps_per_epoch)) for e in range(epochs)]


def _rates_on_plateau(learning_rate, callbacks, epochs):
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    rates = []
    for e in range(epochs):
        rates.append(float(model.optimizer.learning_rate))
        for callback in callbacks:
            callback.on_epoch_end(e, {"val_loss": 1.0})
    return rates
