"""Schedules against Adam on Fashion-MNIST, as the classic MLP tutorial compares them.

A 784-512-200-10 MLP trained with plain SGD, batch size 64, on a fixed random 20,000-image
subsample of the training set, validated on the 10,000-image test set. The families of
the tutorial: constant, time-based, step, exponential and polynomial decay, and Adam with
a constant rate as the adaptive baseline.

The data: `keras.datasets.fashion_mnist` (downloaded once and cached), or a local copy of
the four original IDX files (`train-images-idx3-ubyte.gz`, ...):

    python -m lrsweep launch sweeps/fashion_mnist.py --data-dir ~/data/fashion-mnist
"""

from lrsweep import Choice, Range, Sweep

LR = Range(1e-3, 0.5, log=True)

SWEEP = Sweep(
    name="fashion_mnist",
    dataset="fashion_mnist",
    subsample=20_000,
    validation_split=None,  # validate on the dataset's own test set
    model="mlp",
    model_args={"hidden": (512, 200)},
    optimizer="sgd",
    batch_size=64,
    max_epochs=20,
    families={
        "constant": {"initial_lr": LR},
        "time_based": {"initial_lr": LR, "decay": Range(1e-3, 1.0, log=True)},
        "step": {"initial_lr": LR, "drop": Range(0.2, 0.8), "epochs_drop": Choice(2, 5, 10)},
        "exponential": {"initial_lr": LR, "k": Range(0.01, 0.5, log=True)},
        "polynomial": {"initial_lr": LR, "power": Range(0.5, 3.0)},
        "adam": {"initial_lr": Range(1e-4, 1e-2, log=True)},
    },
    num_samples=30,
    early_stopping="asha",
    grace_period=2,
    reduction_factor=3,
    metric="val_accuracy",
)
