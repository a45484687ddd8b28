"""Every schedule family on CIFAR-10 with a small CNN: the full comparison.

Two 3x3 convolution blocks (32 and 64 filters, each followed by max pooling), a 128-unit
dense layer with dropout, softmax over the 10 classes; SGD with momentum 0.9, batch size
64, 30 epochs, validation on the 10,000-image test set. It trains on a CPU (slowly); on a
GPU node give each trial a fraction of a card, e.g. `resources={"cpu": 1, "gpu": 0.5}` to
run two trials per GPU (TensorFlow's memory growth is on, so they share it).

The data: `keras.datasets.cifar10` (downloaded once and cached), or a local copy of the
original python version (`cifar-10-python.tar.gz` or its `cifar-10-batches-py/` folder):

    python -m lrsweep launch sweeps/cifar.py --data-dir ~/data
"""

from lrsweep import Choice, Range, Sweep

LR = Range(1e-3, 0.2, log=True)

SWEEP = Sweep(
    name="cifar",
    dataset="cifar10",
    validation_split=None,  # validate on the dataset's own test set
    model="cnn",
    model_args={"filters": (32, 64), "dense": 128, "dropout": 0.3},
    optimizer="sgd",
    optimizer_args={"momentum": 0.9},
    batch_size=64,
    max_epochs=30,
    families={
        "constant": {"initial_lr": LR},
        "time_based": {"initial_lr": LR, "decay": Range(1e-3, 0.5, log=True)},
        "step": {"initial_lr": LR, "drop": Range(0.1, 0.7), "epochs_drop": Choice(5, 10, 15)},
        "exponential": {"initial_lr": LR, "k": Range(0.01, 0.3, log=True)},
        "polynomial": {"initial_lr": LR, "power": Range(0.5, 3.0)},
        "cosine": {"initial_lr": LR, "warmup_epochs": Choice(0, 2)},
        "cyclical": {"base_lr": Range(1e-4, 1e-3, log=True), "max_lr": Range(0.01, 0.2, log=True),
                     "step_size": Choice(3, 5), "mode": Choice("triangular", "triangular2")},
        "one_cycle": {"max_lr": Range(0.01, 0.3, log=True)},
        "plateau": {"initial_lr": LR, "factor": Range(0.1, 0.5), "patience": Choice(2, 4)},
        "adam": {"initial_lr": Range(1e-4, 3e-3, log=True)},
        "rmsprop": {"initial_lr": Range(1e-4, 3e-3, log=True)},
    },
    num_samples=40,
    early_stopping="asha",
    grace_period=3,
    reduction_factor=3,
    metric="val_accuracy",
    resources={"cpu": 1, "gpu": 0},
)
