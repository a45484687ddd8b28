"""lrsweep's own Keras schedules: the families no built-in Keras class reproduces exactly.

Each is a `LearningRateSchedule` of the optimizer step. `ProgressSchedule` is the one
place that turns steps into epochs: `t = step / steps_per_epoch`, floored to the epoch
when `granularity="epoch"`. The shapes are small functions of progress, and the composite
policies (warm-up then cosine, one-cycle) are phases joined with `ops.where`.

`lrsweep best --python` prints these classes' source into a plain Keras script, so this
module imports only `math` and `keras`.
"""

import math

import keras
from keras import ops


def cosine_anneal(start, end, pct):
    """From `start` at pct=0 to `end` at pct=1 along half a cosine."""
    return end + (start - end) * (1 + ops.cos(math.pi * pct)) / 2


def polynomial_anneal(start, end, pct, power):
    """From `start` at pct=0 to `end` at pct=1 along `(1 - pct) ** power`."""
    return (start - end) * (1 - pct) ** power + end


class ProgressSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule written in epochs: subclasses define `rate(t)` for epoch progress `t`.

    Args:
        steps_per_epoch: optimizer steps in one epoch.
        granularity: `"epoch"` holds the rate for a whole epoch (what Keras'
            `LearningRateScheduler` callback does); `"step"` updates it every batch.
    """

    def __init__(self, steps_per_epoch, granularity="epoch"):
        if granularity not in ("epoch", "step"):
            raise ValueError(f"Argument `granularity` must be 'epoch' or 'step'. Received: granularity={granularity!r}")
        self.steps_per_epoch = int(steps_per_epoch)
        self.granularity = granularity

    def __call__(self, step):
        if self.granularity == "epoch":  # in integers: float32 holds steps exactly only to 2**24
            t = ops.cast(ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch), "float32")
        else:
            t = ops.cast(step, "float32") / self.steps_per_epoch
        return ops.cast(self.rate(t), "float32")

    def rate(self, t):
        raise NotImplementedError

    def get_config(self):
        return {"steps_per_epoch": self.steps_per_epoch, "granularity": self.granularity}


@keras.saving.register_keras_serializable("lrsweep")
class Constant(ProgressSchedule):
    """`initial_lr` throughout.

    Example: `Constant(0.01, steps_per_epoch=100)`.
    """

    def __init__(self, initial_lr, steps_per_epoch, granularity="epoch"):
        super().__init__(steps_per_epoch, granularity)
        self.initial_lr = initial_lr

    def rate(self, t):
        return ops.zeros_like(t) + self.initial_lr

    def get_config(self):
        return {"initial_lr": self.initial_lr, **super().get_config()}


@keras.saving.register_keras_serializable("lrsweep")
class Polynomial(ProgressSchedule):
    """Polynomial decay to `end_lr` over `epochs`:

    ```python
    (initial_lr - end_lr) * (1 - t / epochs) ** power + end_lr
    ```

    Example: `Polynomial(0.5, power=1.0, end_lr=0.0, epochs=100, steps_per_epoch=10)` gives
    0.25 in epoch index 50.
    """

    def __init__(self, initial_lr, power, end_lr, epochs, steps_per_epoch, granularity="epoch"):
        super().__init__(steps_per_epoch, granularity)
        self.initial_lr, self.power, self.end_lr, self.epochs = initial_lr, power, end_lr, epochs

    def rate(self, t):
        return polynomial_anneal(self.initial_lr, self.end_lr, ops.minimum(t / self.epochs, 1.0), self.power)

    def get_config(self):
        return {"initial_lr": self.initial_lr, "power": self.power, "end_lr": self.end_lr,
                "epochs": self.epochs, **super().get_config()}


@keras.saving.register_keras_serializable("lrsweep")
class Cosine(ProgressSchedule):
    """Linear warm-up over `warmup_epochs` (W), then cosine decay to `alpha * initial_lr`:

    ```python
    if t < W: initial_lr * (t + 1) / (W + 1)
    else:     initial_lr * (alpha + (1 - alpha) * (1 + cos(pi * (t - W) / (epochs - W))) / 2)
    ```

    Example: `Cosine(0.1, alpha=0.0, warmup_epochs=2, epochs=20, steps_per_epoch=50)`.
    """

    def __init__(self, initial_lr, alpha, warmup_epochs, epochs, steps_per_epoch, granularity="epoch"):
        super().__init__(steps_per_epoch, granularity)
        self.initial_lr, self.alpha = initial_lr, alpha
        self.warmup_epochs, self.epochs = warmup_epochs, epochs

    def rate(self, t):
        w = self.warmup_epochs
        warmup = self.initial_lr * (t + 1) / (w + 1)
        pct = ops.clip((t - w) / (self.epochs - w), 0.0, 1.0)
        decay = cosine_anneal(self.initial_lr, self.alpha * self.initial_lr, pct)
        return ops.where(t < w, warmup, decay)

    def get_config(self):
        return {"initial_lr": self.initial_lr, "alpha": self.alpha, "warmup_epochs": self.warmup_epochs,
                "epochs": self.epochs, **super().get_config()}


@keras.saving.register_keras_serializable("lrsweep")
class Cyclical(ProgressSchedule):
    """Smith's cyclical learning rate, counted in epochs:

    ```python
    c = floor(1 + t / (2 * step_size))
    x = abs(t / step_size - 2 * c + 1)
    base_lr + (max_lr - base_lr) * max(0, 1 - x) * s
    # s: 1 (triangular), 1 / 2 ** (c - 1) (triangular2), gamma ** t (exp_range)
    ```

    Example: `Cyclical(0.001, 0.1, step_size=4, mode="triangular2", steps_per_epoch=100)`.
    """

    def __init__(self, base_lr, max_lr, step_size, mode="triangular", gamma=1.0, steps_per_epoch=1,
                 granularity="epoch"):
        super().__init__(steps_per_epoch, granularity)
        if mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"Argument `mode` must be 'triangular', 'triangular2' or 'exp_range'. Received: mode={mode!r}")
        self.base_lr, self.max_lr, self.step_size = base_lr, max_lr, step_size
        self.mode, self.gamma = mode, gamma

    def rate(self, t):
        c = ops.floor(1 + t / (2 * self.step_size))
        x = ops.abs(t / self.step_size - 2 * c + 1)
        if self.mode == "triangular":
            s = 1.0
        elif self.mode == "triangular2":
            s = 1 / 2 ** (c - 1)
        else:
            s = self.gamma ** t
        return self.base_lr + (self.max_lr - self.base_lr) * ops.maximum(0.0, 1 - x) * s

    def get_config(self):
        return {"base_lr": self.base_lr, "max_lr": self.max_lr, "step_size": self.step_size,
                "mode": self.mode, "gamma": self.gamma, **super().get_config()}


@keras.saving.register_keras_serializable("lrsweep")
class OneCycle(ProgressSchedule):
    """The one-cycle policy over `epochs`, two cosine phases:

    ```python
    p, lo, end = pct_start * epochs, max_lr / div, max_lr / final_div
    if t < p: lo + (max_lr - lo) * (1 - cos(pi * t / p)) / 2
    else:     end + (max_lr - end) * (1 + cos(pi * (t - p) / (epochs - p))) / 2
    ```

    Example: `OneCycle(0.1, pct_start=0.3, div=25, final_div=1e4, epochs=20, steps_per_epoch=100)`.
    """

    def __init__(self, max_lr, pct_start, div, final_div, epochs, steps_per_epoch, granularity="epoch"):
        super().__init__(steps_per_epoch, granularity)
        self.max_lr, self.pct_start, self.div, self.final_div = max_lr, pct_start, div, final_div
        self.epochs = epochs

    def rate(self, t):
        p = self.pct_start * self.epochs
        up = cosine_anneal(self.max_lr / self.div, self.max_lr, ops.minimum(t / p, 1.0))
        down = cosine_anneal(self.max_lr, self.max_lr / self.final_div,
                             ops.clip((t - p) / (self.epochs - p), 0.0, 1.0))
        return ops.where(t < p, up, down)

    def get_config(self):
        return {"max_lr": self.max_lr, "pct_start": self.pct_start, "div": self.div,
                "final_div": self.final_div, "epochs": self.epochs, **super().get_config()}


@keras.saving.register_keras_serializable("lrsweep")
class Stretched(keras.optimizers.schedules.LearningRateSchedule):
    """Another schedule run through in `over` epochs instead of its own `epochs`
    (early_stopping="budget" trains each rung's trials with the whole schedule fitted to
    the rung's epochs): at optimizer step s, the rate of `schedule` at step
    `s * epochs / over`. The inner schedule keeps its own granularity: a per-epoch one
    holds each of its epochs for `over / epochs` of a rung's epoch, so a 1-epoch rung still
    trains the whole curve, not its first rate.

    Example: `Stretched(keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5,
    staircase=True), epochs=20, over=5)` halves the rate every 25 steps.
    """

    def __init__(self, schedule, epochs, over):
        self.schedule, self.epochs, self.over = schedule, epochs, over

    def __call__(self, step):
        # In float64, multiplied first: an exact whole number of inner epochs stays exact
        # (float32 holds steps exactly only to 2**24)
        return self.schedule(ops.cast(step, "float64") * self.epochs / self.over)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "epochs": self.epochs,
                "over": self.over}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(keras.optimizers.schedules.deserialize(config.pop("schedule")), **config)
