"""The schedule families and their parameters, checked in plain Python.

Nothing here imports Keras: a sweep file or a `schedule` command with a bad parameter is
answered in milliseconds. Each family's `build` imports Keras when it is called, in a trial
or in the `schedule` preview, and returns what the optimizer takes as `learning_rate`.

Adding a family: one class (or composition) in `curves.py` and one line in `FAMILIES`.
"""

import math
import numbers
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from lrsweep.errors import LrsweepError, shown

REQUIRED = object()

# Adaptive optimizers with a constant rate are families of their own in the ranking
# (`adam/constant`), the baseline the tutorials compare schedules against.
ADAPTIVE_OPTIMIZERS = ("adam", "rmsprop", "adagrad", "adadelta")
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta"}
GRANULARITIES = ("epoch", "step")


@dataclass(frozen=True)
class Param:
    """One parameter of a family: its type, its bound in words, and the test of that bound."""

    name: str
    kind: type  # float, int or str
    rule: str  # completes "Argument `x` must be ..."
    test: Callable[[Any], bool]
    default: Any = REQUIRED
    choices: tuple = ()
    below_epochs: bool = False  # a count of epochs that must be < the schedule's (warmup_epochs < E)

    @property
    def required(self):
        return self.default is REQUIRED

    def parse(self, text):
        """The value of `name=text` on a command line (bad input named as typed: 1e400, not inf)."""
        if self.kind is str:
            return text
        try:
            number = float(text)
        except ValueError:
            raise LrsweepError(self.message(text)) from None
        if not math.isfinite(number):
            raise LrsweepError(self.message(text))
        if self.kind is int and number.is_integer():
            return int(number)
        return number

    def check(self, value):
        """`value` if it is of the right type and within bounds, else LrsweepError. Numbers
        of numpy's types count as the numbers they are."""
        if self.kind is str:
            ok = isinstance(value, str) and value in self.choices
        elif self.kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and self.test(int(value))
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and finite(value) and self.test(value)
            if ok and abs(_float32(value)) == math.inf:  # Keras would train at infinity (end_lr, min_lr)
                raise LrsweepError(f"Argument `{self.name}` must be {self.rule}, and at most 3.4e38 (Keras trains "
                                   f"in float32). Received: {self.name}={value!r}")
            if ok and not self.test(_float32(value)):  # drop=1e-300 is 0 there, alpha=0.99999999999 is 1
                raise LrsweepError(f"Argument `{self.name}` must be {self.rule} in float32, which Keras trains in, "
                                   f"where it is {_float32(value)!r}. Received: {self.name}={value!r}")
        if not ok:
            raise LrsweepError(self.message(value))
        return float(value) if self.kind is float else int(value) if self.kind is int else value

    def message(self, value):
        return f"Argument `{self.name}` must be {self.rule}. Received: {self.name}={shown(value)}"


def whole(value, minimum, maximum=None):
    """An int (not a bool) from `minimum` to `maximum` (default `COUNT_MAX`)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and minimum <= value <= (COUNT_MAX if maximum is None else maximum))


def finite(value):
    """A finite number, as a float (an int past 1e308 is not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _float32(value):
    """`value` as the float32 Keras trains with: 0 below 1.4e-45, inf past 3.4e38."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.inf


# A rate is a float32 variable in Keras: one that float32 rounds to 0 or infinity would train at that.
RATE_RULE = "a rate > 0 that float32 holds (1.4e-45 to 3.4e38)"


def rate(name, default=REQUIRED):
    return Param(name, float, RATE_RULE, lambda v: 0 < _float32(v) < math.inf, default)


def positive(name, default=REQUIRED):
    return Param(name, float, "> 0", lambda v: v > 0, default)


def non_negative(name, default=REQUIRED):
    return Param(name, float, ">= 0", lambda v: v >= 0, default)


def open_unit(name, default=REQUIRED):
    return Param(name, float, "in (0, 1)", lambda v: 0 < v < 1, default)


# The largest count of epochs or steps a parameter may give: Keras' step counter is an int64,
# and a step is epochs times steps per epoch (each at most this).
COUNT_MAX = 2**31 - 1


def count(name, minimum=1, default=REQUIRED, below_epochs=False):
    return Param(name, int, f"an integer from {minimum} to {COUNT_MAX}", lambda v: minimum <= v <= COUNT_MAX, default,
                 below_epochs=below_epochs)


def above_one(name, default=REQUIRED):
    return Param(name, float, "> 1", lambda v: v > 1, default)


def one_of(name, choices, default=REQUIRED):
    return Param(name, str, "one of " + ", ".join(repr(c) for c in choices), lambda v: True, default,
                 tuple(choices))


@dataclass(frozen=True)
class Family:
    """A schedule family: its parameters, the checks that tie them together, and its builder.

    `build(p, steps_per_epoch, epochs, granularity)` returns the optimizer's learning rate
    (a Keras `LearningRateSchedule`, or a float) and a list of Keras callbacks.
    `relations(p, epochs)` raises LrsweepError when parameters are fine alone but not together.
    """

    name: str
    params: tuple
    build: Callable
    formula: str
    relations: Callable = field(default=lambda p, epochs: None)

    def param(self, name):
        for p in self.params:
            if p.name == name:
                return p
        named = name if isinstance(name, str) and name.isprintable() else shown(name)  # a line break in it
        raise LrsweepError(
            f"Unknown parameter `{named}` for family `{self.name}`. "
            f"Valid parameters: {', '.join(p.name for p in self.params)}")

    def check(self, params, epochs):
        """The family's full parameters (defaults filled in), checked; else LrsweepError."""
        for name in params:
            self.param(name)
        full = {}
        for p in self.params:
            if p.name in params:
                full[p.name] = p.check(params[p.name])
            elif p.required:
                raise LrsweepError(f"Missing parameter `{p.name}` for family `{self.name}`. "
                                   f"Received: {', '.join(params) or 'no parameters'}")
            else:
                full[p.name] = p.default
            if p.below_epochs and not full[p.name] < epochs:
                raise LrsweepError(f"Argument `{p.name}` must be < the number of epochs ({epochs}). "
                                   f"Received: {p.name}={full[p.name]!r}")
        self.relations(full, epochs)
        return full


def _less(low, high):
    def relation(p, epochs):
        if not _float32(p[low]) < _float32(p[high]):  # as Keras trains them
            same = " (equal in float32, which Keras trains in)" if p[low] < p[high] else ""
            raise LrsweepError(f"Argument `{low}` must be < `{high}`{same}. "
                               f"Received: {low}={p[low]!r}, {high}={p[high]!r}")
    return relation


# The builders import Keras only when called.

def _constant(p, spe, epochs, granularity):
    from lrsweep.schedules import curves
    return curves.Constant(p["initial_lr"], spe, granularity), []


def _time_based(p, spe, epochs, granularity):
    from keras.optimizers.schedules import InverseTimeDecay
    if p["decay_unit"] == "step":  # Keras 2's `decay` argument: e is the optimizer step
        return InverseTimeDecay(p["initial_lr"], 1, p["decay"]), []
    return InverseTimeDecay(p["initial_lr"], spe, p["decay"], staircase=granularity == "epoch"), []


def _step(p, spe, epochs, granularity):
    from keras.optimizers.schedules import ExponentialDecay
    # floor(floor(step / spe) / epochs_drop) == floor(step / (spe * epochs_drop)): one class
    # serves both granularities.
    return ExponentialDecay(p["initial_lr"], p["epochs_drop"] * spe, p["drop"], staircase=True), []


def _exponential(p, spe, epochs, granularity):
    from keras.optimizers.schedules import ExponentialDecay
    return ExponentialDecay(p["initial_lr"], spe, math.exp(-p["k"]), staircase=granularity == "epoch"), []


def _polynomial(p, spe, epochs, granularity):
    if granularity == "step":
        from keras.optimizers.schedules import PolynomialDecay
        return PolynomialDecay(p["initial_lr"], epochs * spe, end_learning_rate=p["end_lr"],
                               power=p["power"]), []
    from lrsweep.schedules import curves  # Keras' PolynomialDecay has no staircase
    return curves.Polynomial(p["initial_lr"], p["power"], p["end_lr"], epochs, spe, granularity), []


def _cosine(p, spe, epochs, granularity):
    if granularity == "step" and p["warmup_epochs"] == 0:
        from keras.optimizers.schedules import CosineDecay
        return CosineDecay(p["initial_lr"], epochs * spe, alpha=p["alpha"]), []
    # Keras' CosineDecay has no staircase, and its warm-up is another curve.
    from lrsweep.schedules import curves
    return curves.Cosine(p["initial_lr"], p["alpha"], p["warmup_epochs"], epochs, spe, granularity), []


def _cyclical(p, spe, epochs, granularity):
    from lrsweep.schedules import curves
    return curves.Cyclical(p["base_lr"], p["max_lr"], p["step_size"], p["mode"], p["gamma"], spe,
                           granularity), []


def _one_cycle(p, spe, epochs, granularity):
    from lrsweep.schedules import curves
    return curves.OneCycle(p["max_lr"], p["pct_start"], p["div"], p["final_div"], epochs, spe,
                           granularity), []


def _plateau(p, spe, epochs, granularity):
    # Keras 3 refuses ReduceLROnPlateau on an optimizer built with a schedule: a float rate.
    import keras
    callback = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=p["factor"],
                                                 patience=p["patience"], min_lr=p["min_lr"])
    return p["initial_lr"], [callback]


FAMILIES = {f.name: f for f in (
    Family("constant", (rate("initial_lr"),), _constant, "initial_lr"),
    Family("time_based", (rate("initial_lr"), positive("decay"), one_of("decay_unit", ("epoch", "step"), "epoch")),
           _time_based, "initial_lr / (1 + decay * e)"),
    Family("step", (rate("initial_lr"), open_unit("drop"), count("epochs_drop")),
           _step, "initial_lr * drop ** floor(e / epochs_drop)"),
    Family("exponential", (rate("initial_lr"), positive("k")), _exponential, "initial_lr * exp(-k * e)"),
    Family("polynomial", (rate("initial_lr"), positive("power"), non_negative("end_lr", 0.0)),
           _polynomial, "(initial_lr - end_lr) * (1 - e / E) ** power + end_lr"),
    Family("cosine", (rate("initial_lr"), Param("alpha", float, "in [0, 1)", lambda v: 0 <= v < 1, 0.0),
                      count("warmup_epochs", minimum=0, default=0, below_epochs=True)),
           _cosine, "linear warm-up over warmup_epochs, then cosine from initial_lr to alpha * initial_lr"),
    Family("cyclical", (rate("base_lr"), rate("max_lr"), count("step_size"),
                        one_of("mode", ("triangular", "triangular2", "exp_range"), "triangular"),
                        Param("gamma", float, "in (0, 1]", lambda v: 0 < v <= 1, 1.0)),
           _cyclical, "Smith's cyclical rate between base_lr and max_lr, half-cycle step_size epochs",
           _less("base_lr", "max_lr")),
    Family("one_cycle", (rate("max_lr"), open_unit("pct_start", 0.3), above_one("div", 25.0),
                         above_one("final_div", 1e4)),
           _one_cycle, "cosine up from max_lr / div to max_lr over pct_start * E, then down to max_lr / final_div"),
    Family("plateau", (rate("initial_lr"), open_unit("factor", 0.1), count("patience", default=10),
                       non_negative("min_lr", 0.0)),
           _plateau, "ReduceLROnPlateau on val_loss: initial_lr, times factor after patience epochs without improvement"),
)}


def family(name):
    """The family called `name`; an unknown name is bad input that lists the valid ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise LrsweepError(f"Unknown schedule family: {name!r}. Valid families: {', '.join(FAMILIES)}") from None


# A parameter that changes its family's schedule only where another has one value:
# {(family, parameter): (other parameter, its value)}.
ACTS_ONLY_WHERE = {("cyclical", "gamma"): ("mode", "exp_range")}


def acts(name, param, params):
    """Whether parameter `param` changes family `name`'s schedule, the family's other
    parameters being `params` (defaults where missing): cyclical's `gamma` in mode exp_range only."""
    other, value = ACTS_ONLY_WHERE.get((name, param), (None, None))
    return other is None or params.get(other, family(name).param(other).default) == value


def check_schedule(name, params, epochs, granularity="epoch"):
    """Check a family's parameters without Keras; returns them with defaults filled in."""
    if granularity not in GRANULARITIES:
        raise LrsweepError(f"Argument `granularity` must be one of 'epoch', 'step'. "
                           f"Received: granularity={granularity!r}")
    return family(name).check(params, epochs)


def build_schedule(name, params, *, steps_per_epoch, epochs, granularity="epoch", over=None):
    """The optimizer's learning rate and the callbacks a family needs (imports Keras).

    `params` are checked first (the Keras-free check above), so a bad value fails the same
    way here as in a sweep file. `over` (epochs, fewer than `epochs`) runs the whole
    `epochs`-long schedule through in `over` epochs (early_stopping="budget"): the rate at
    step s is the full schedule's at s * epochs / over, and the plateau family's patience
    shrinks in the same ratio.
    """
    full = check_schedule(name, params, epochs, granularity)
    if over is not None and over != epochs:
        if name == "plateau":
            full = {**full, "patience": max(1, round(full["patience"] * over / epochs))}
        rate, callbacks = FAMILIES[name].build(full, steps_per_epoch, epochs, granularity)
        if not isinstance(rate, float):
            from lrsweep.schedules.curves import Stretched
            rate = Stretched(rate, epochs, over)
        return rate, callbacks
    return FAMILIES[name].build(full, steps_per_epoch, epochs, granularity)
