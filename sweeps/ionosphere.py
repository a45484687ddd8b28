"""The classic Keras learning-rate-schedule experiment, on the UCI ionosphere data.

The tutorial trains a 34-34-1 network (relu, then one sigmoid unit) with SGD and momentum
0.8, batch size 28, for 50 epochs, holding out the last 33% of the 351 radar returns (116
rows) for validation, and compares a constant rate of 0.1 with time-based decay
(decay 0.002) and step decay (halve every 10 epochs). Here every family competes over a
range around those values. One validation sample is 0.86 points of accuracy: rank with
that in mind.

The data: UCI's `ionosphere.data` (downloaded and cached), or a local copy:

    python -m lrsweep launch sweeps/ionosphere.py --data-dir tests/data
"""

from lrsweep import Choice, Range, Sweep

LR = Range(0.01, 0.5, log=True)

SWEEP = Sweep(
    name="ionosphere",
    dataset="ionosphere",
    validation_split=0.33,
    model="mlp",
    model_args={"hidden": (34,)},
    optimizer="sgd",
    optimizer_args={"momentum": 0.8},
    batch_size=28,
    max_epochs=50,
    families={
        "constant": {"initial_lr": LR},
        "time_based": {"initial_lr": LR, "decay": Range(1e-4, 0.1, log=True)},
        "step": {"initial_lr": LR, "drop": Range(0.2, 0.8), "epochs_drop": Choice(5, 10, 20)},
        "exponential": {"initial_lr": LR, "k": Range(0.005, 0.2, log=True)},
        "polynomial": {"initial_lr": LR, "power": Range(0.5, 3.0)},
        "cosine": {"initial_lr": LR, "warmup_epochs": Choice(0, 5)},
        "cyclical": {"base_lr": Range(1e-3, 1e-2, log=True), "max_lr": Range(0.02, 0.5, log=True),
                     "step_size": Choice(5, 10), "mode": Choice("triangular", "triangular2")},
        "one_cycle": {"max_lr": Range(0.02, 0.5, log=True)},
        "plateau": {"initial_lr": LR, "factor": Range(0.1, 0.5), "patience": Choice(3, 5)},
        "adam": {"initial_lr": Range(1e-4, 1e-2, log=True)},
    },
    num_samples=40,
    early_stopping="asha",
    grace_period=5,
    reduction_factor=3,
    metric="val_accuracy",
)
