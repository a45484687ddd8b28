"""The fixed workloads every benchmark runs: the same data, model, schedules and epochs for
lrsweep, the reachable limit and the peers, so that their times compare.

    small   digits (scikit-learn), a 64-128-10 MLP, SGD, batch 32, 20 epochs, 8 schedules
    medium  16,000 synthetic Fashion-MNIST-shaped rows, a 784-512-200-10 MLP, SGD, batch 64,
            10 epochs, the same 8 schedules

Both hold out the last 20% of the rows for validation, as Keras' validation_split does, and
scale pixels to [0, 1].
"""

import os
from dataclasses import dataclass, field

import numpy as np

SCHEDULES = [
    {"family": "constant", "initial_lr": 0.1},
    {"family": "time_based", "initial_lr": 0.1, "decay": 0.05},
    {"family": "step", "initial_lr": 0.1, "drop": 0.5, "epochs_drop": 5},
    {"family": "exponential", "initial_lr": 0.1, "k": 0.05},
    {"family": "polynomial", "initial_lr": 0.1, "power": 2.0},
    {"family": "cosine", "initial_lr": 0.1},
    {"family": "cyclical", "base_lr": 0.01, "max_lr": 0.1, "step_size": 4},
    {"family": "one_cycle", "max_lr": 0.1},
]


@dataclass(frozen=True)
class Workload:
    name: str
    dataset: str  # an lrsweep dataset spec
    hidden: tuple
    batch_size: int
    epochs: int
    configs: list = field(default_factory=lambda: list(SCHEDULES))

    def load(self):
        """The arrays every runner trains on: lrsweep's own loader, so preprocessing is equal."""
        from lrsweep.data import load_dataset

        return load_dataset(self.dataset, validation_split=0.2, scale="unit")

    def sweep_file(self, folder, name=None, cpus=1):
        """A sweep file that runs this workload's configs through `lrsweep launch`."""
        path = os.path.join(folder, f"{name or self.name}.py")
        with open(path, "w") as f:
            f.write(
                "from lrsweep import Sweep\n"
                f"SWEEP = Sweep(name={name or self.name!r}, dataset={self.dataset!r}, validation_split=0.2, scale='unit',\n"
                f"              model='mlp', model_args={{'hidden': {self.hidden!r}}}, batch_size={self.batch_size},\n"
                f"              max_epochs={self.epochs}, early_stopping=None, configs={self.configs!r},\n"
                f"              resources={{'cpu': {cpus}, 'gpu': 0}})\n")
        return path


def synthetic_fashion(folder, rows=16_000, seed=0):
    """An npz of Fashion-MNIST shape (28x28 uint8 images, 10 classes) with a learnable label."""
    path = os.path.join(folder, "synthetic_fashion.npz")
    if not os.path.exists(path):
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (rows, 28, 28), dtype=np.uint8)
        centred = x.reshape(rows, -1).astype(np.float32) - 127.5
        y = (centred @ rng.normal(size=(784, 10))).argmax(axis=1)  # ten classes of about equal size
        np.savez(path, x=x, y=y)
    return path


def workloads(folder):
    return {
        "small": Workload("small", "digits", (128,), 32, 20),
        "medium": Workload("medium", f"npz:{synthetic_fashion(folder)}", (512, 200), 64, 10),
    }


def plain_trial(workload, data, config):
    """(compiled Keras model, fit keyword arguments) of one config, as a user would train it by
    hand (a plain `fit` of the arrays): what the limit and every peer train."""
    import keras

    from lrsweep.models import build_model, loss_for
    from lrsweep.run.trial import steps_per_epoch
    from lrsweep.schedules.registry import build_schedule

    params = {k: v for k, v in config.items() if k != "family"}
    steps = steps_per_epoch(len(data.x_train), workload.batch_size)
    learning_rate, callbacks = build_schedule(config["family"], params, steps_per_epoch=steps,
                                              epochs=workload.epochs)
    model = build_model("mlp", {"hidden": workload.hidden}, data.x_train.shape[1:], data.num_classes)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=loss_for(data.num_classes),
                  metrics=["accuracy"])
    fit = dict(x=data.x_train, y=data.y_train, batch_size=workload.batch_size, epochs=workload.epochs,
               validation_data=(data.x_val, data.y_val), verbose=0, callbacks=callbacks)
    return model, fit
