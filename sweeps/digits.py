"""The offline default: which learning-rate schedule trains a small MLP on digits best?

scikit-learn's 8x8 handwritten digits (1,797 images, no download), a 64-128-10 MLP trained
with SGD, the last 20% of the rows held out for validation. Ten families compete, each
with its own parameter ranges; Optuna's TPE picks the next configuration, ASHA stops the
poor ones after 2 epochs; then each family's best trains again with five seeds. On a 2-core
machine it finishes in about a minute:

    python -m lrsweep launch sweeps/digits.py

Copy this file to start a sweep of your own: every field is documented in `lrsweep.Sweep`.
"""

from lrsweep import Choice, Range, Sweep

LR = Range(1e-3, 0.5, log=True)  # the initial rate of every schedule

SWEEP = Sweep(
    name="digits",
    dataset="digits",
    validation_split=0.2,
    model="mlp",
    model_args={"hidden": (128,)},
    optimizer="sgd",
    batch_size=32,
    max_epochs=20,
    families={
        "constant": {"initial_lr": LR},
        "time_based": {"initial_lr": LR, "decay": Range(1e-3, 1.0, log=True)},
        "step": {"initial_lr": LR, "drop": Range(0.1, 0.8), "epochs_drop": Choice(2, 5, 10)},
        "exponential": {"initial_lr": LR, "k": Range(0.01, 0.5, log=True)},
        "polynomial": {"initial_lr": LR, "power": Range(0.5, 3.0)},
        "cosine": {"initial_lr": LR, "warmup_epochs": Choice(0, 2)},
        "cyclical": {"base_lr": Range(1e-4, 1e-2, log=True), "max_lr": Range(0.02, 0.5, log=True),
                     "step_size": Choice(2, 4), "mode": Choice("triangular", "triangular2")},
        "one_cycle": {"max_lr": Range(0.01, 0.5, log=True)},
        "plateau": {"initial_lr": LR, "factor": Range(0.1, 0.5), "patience": Choice(2, 3)},
        "adam": {"initial_lr": Range(1e-4, 1e-2, log=True)},
    },
    num_samples=30,
    seed=0,
    early_stopping="asha",
    grace_period=2,
    reduction_factor=3,
    metric="val_accuracy",
    resources={"cpu": 1, "gpu": 0},
)
