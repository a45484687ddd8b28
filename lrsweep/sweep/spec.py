"""`lrsweep.Sweep`: what a sweep file defines, checked field by field without Ray or Keras."""

import dataclasses
import importlib.machinery
import importlib.util
import itertools
import math
import numbers
import os
import re
import sys
import traceback
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lrsweep.errors import LrsweepError, shown, warn
from lrsweep.models import check_model
from lrsweep.results import location_error
from lrsweep.schedules.registry import (ACTS_ONLY_WHERE, ADAPTIVE_OPTIMIZERS, COUNT_MAX, GRANULARITIES, OPTIMIZERS,
                                        acts, family, finite, whole)

METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
OPTIMIZER_ARGS = {"sgd": ("momentum", "nesterov")}
EARLY_STOPPING = ("asha", "budget")


@dataclass(frozen=True)
class Range:
    """A parameter sampled between `low` and `high` (inclusive); `log=True` samples its log.

    Integer parameters (`epochs_drop`, `step_size`, ...) take integer bounds.
    """

    low: float
    high: float
    log: bool = False

    def __str__(self):
        return f"{_bound(self.low)}..{_bound(self.high)}" + (" (log)" if self.log else "")

    @property
    def integer(self):
        """Whether Optuna draws whole numbers (`suggest_int`): an integer parameter's range,
        whose bounds a checked arm holds as ints (a float parameter's as floats)."""
        return isinstance(self.low, int) and isinstance(self.high, int)


def _bound(value):
    """A Range's bound as its `str` shows it: a number in %g, anything else (a bad input being
    named: a text, 10**400) as a bad-input line shows it."""
    try:
        return f"{value:g}" if isinstance(value, numbers.Real) and not isinstance(value, bool) else shown(value)
    except OverflowError:
        return shown(value)


@dataclass(frozen=True, init=False)
class Choice:
    """A parameter chosen among `values`: `Choice(5, 10, 20)`."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", tuple(values))

    def __str__(self):
        return "{" + ", ".join(map(str, self.values)) + "}"


@dataclass(frozen=True)
class Arm:
    """One row of the ranking: an optimizer and a schedule family, with its parameter space."""

    label: str  # "sgd/step"
    optimizer: str
    family: str
    space: Mapping[str, Any]  # parameter -> Range, Choice or a fixed value


# The Sweep fields, besides the dataset's, that decide how one trial trains.
TRAINING_FIELDS = ("subsample", "validation_split", "scale", "model", "model_args", "optimizer", "optimizer_args",
                   "batch_size", "max_epochs", "granularity", "metric", "mode", "seed", "resources", "max_failures",
                   "storage", "checkpoint_seconds")


# The largest seed NumPy's generators and Optuna's samplers take.
MAX_SEED = 2**32 - 1
# The smallest amount of a resource Ray schedules (`ray._raylet.RESOURCE_UNIT_SCALING`: 10,000 a unit).
RESOURCE_UNIT = 0.0001


def _field_error(name, rule, value):
    return LrsweepError(f"Argument `{name}` must be {rule}. Received: {name}={shown(value)}")


# Confirmation runs of each family's best trial that a search makes unless told otherwise.
CONFIRM_SEEDS = 5


def _integer(name, value, minimum, maximum=COUNT_MAX):
    """A count (epochs, trials, rows, a batch's size): at most `COUNT_MAX` (2**31 - 1) unless
    told, so that epochs times steps per epoch fits Keras' int64 step counter."""
    if not whole(value, minimum, maximum):
        raise _field_error(name, f"an integer from {minimum} to {maximum}", value)


def _number(name, value, rule, test):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not finite(value) or not test(value):
        raise _field_error(name, rule, value)


# The longest run name: folder names hold it and more (`sweep=NAME`, `NAME-confirm`), and a
# folder name is at most 255 bytes. A sweep's own name leaves room for the start time that a
# run's default name adds (`driver.run_name`: NAME-20261207-101500).
NAME_LENGTH = 128
RUN_TIME_LENGTH = len("-20261207-101500")


def check_name(field_name, value, longest=NAME_LENGTH):
    """A sweep or run name: it becomes a folder name and a partition value."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise _field_error(field_name, "letters, digits, '.', '_' or '-'", value)
    if len(value) > longest:
        after = "" if longest == NAME_LENGTH else ", and a run's start time after that"
        raise _field_error(field_name, f"at most {longest} characters (it names folders{after}; this one has "
                                       f"{len(value)})", value)


def _one_of(name, value, choices):
    if value not in choices:
        raise _field_error(name, "one of " + ", ".join(repr(c) for c in choices), value)


def _checked_optimizer_args(args):
    """SGD's `momentum` in [0, 1], as the float Keras requires (it refuses `momentum=0`),
    and `nesterov` True or False: checked here, or every trial would fail on them."""
    args = dict(args)
    if "momentum" in args:
        _number("optimizer_args['momentum']", args["momentum"], "in [0, 1]", lambda v: 0 <= v <= 1)
        args["momentum"] = float(args["momentum"])
    if "nesterov" in args and not isinstance(args["nesterov"], bool):
        raise _field_error("optimizer_args['nesterov']", "True or False", args["nesterov"])
    return args


def parse_arm_label(key):
    """`"step"` -> ("sgd", "step"); `"adam"` -> ("adam", "constant"); `"adam/cosine"` as written."""
    if not isinstance(key, str):
        raise LrsweepError(f"Argument `families` must be keyed by family names. Received: a key {shown(key)}")
    optimizer, _, name = key.rpartition("/")
    if not optimizer and name in ADAPTIVE_OPTIMIZERS:
        return name, "constant"
    if optimizer and optimizer not in OPTIMIZERS:
        raise LrsweepError(f"Unknown optimizer: {optimizer!r} in {key!r}. Valid optimizers: {', '.join(OPTIMIZERS)}")
    family(name)
    return optimizer or None, name


def _corners(space):
    """Every combination of the extreme values of a space: enough to check relations like
    `base_lr < max_lr`, which are monotone in each parameter."""
    names = list(space)
    options = []
    for spec in space.values():
        if isinstance(spec, Range):
            options.append((spec.low, spec.high))
        elif isinstance(spec, Choice):
            options.append(spec.values)
        else:
            options.append((spec,))
    return [dict(zip(names, combo)) for combo in itertools.product(*options)]


def _within_epochs(families, epochs):
    """`families` (checked: the sweep's own) for `epochs` given on the command line
    (`--max-epochs 2`, a quick try): the values of an epoch count that must be below it
    (`warmup_epochs`) that are not are left out of its Choice or Range; returns them and
    the warnings that say so. Where none is left, the space stays as the file has it, and
    the check names the parameter."""
    narrowed, notes = {}, []
    for key, space in families.items():
        fam, space = family(parse_arm_label(key)[1]), dict(space)
        for name, spec in list(space.items()):
            if not fam.param(name).below_epochs:
                continue
            if isinstance(spec, Choice):
                fit = [v for v in spec.values if v < epochs]
                within = Choice(*fit) if fit else spec
            elif isinstance(spec, Range) and spec.low < epochs <= spec.high:
                within = Range(spec.low, epochs - 1, spec.log)
            else:
                within = spec
            if within != spec:
                notes.append(f"max_epochs={epochs}: families[{key!r}] draws `{name}` from {within} instead of "
                             f"{spec} (it must be < max_epochs)")
                space[name] = within
        narrowed[key] = space
    return narrowed, notes


def _check_space(fam, space, epochs):
    """Check each parameter's range or choices against the family's bounds; returns the
    space with float parameters' bounds as floats (an integer Range samples integers)."""
    checked = {}
    for name, spec in space.items():
        param = fam.param(name)
        if isinstance(spec, Range):
            if param.kind is str:
                raise LrsweepError(f"Argument `{name}` takes Choice(...) or a value, not a Range. Received: {name}={spec}")
            if param.kind is int and not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                             for v in (spec.low, spec.high)):
                raise _field_error(name, "a Range of integers", spec)
            for v in (spec.low, spec.high):
                param.check(v)
            if not isinstance(spec.log, bool):
                raise LrsweepError(f"Argument `log` of the Range of `{name}` must be True or False. "
                                   f"Received: log={shown(spec.log)}")
            if spec.log and not spec.low > 0:
                raise LrsweepError(f"A log Range of `{name}` must have low > 0. Received: {name}={spec}")
            if not spec.low <= spec.high:
                raise LrsweepError(f"Range of `{name}` must have low <= high. Received: {name}={spec}")
            if param.kind in (float, int):  # Python's numbers, numpy's too, for Optuna and JSON
                spec = Range(param.kind(spec.low), param.kind(spec.high), spec.log)
        elif isinstance(spec, Choice):
            if not spec.values:
                raise LrsweepError(f"Choice of `{name}` is empty. Received: {name}=Choice()")
            spec = Choice(*(param.check(v) for v in spec.values))
        else:
            spec = param.check(spec)
        checked[name] = spec
    drawn = {name: spec for name, spec in checked.items() if isinstance(spec, (Range, Choice))}
    for name, spec in drawn.items():  # a parameter searched where it changes no schedule: trials of one schedule
        if (isinstance(spec, Range) or len(set(spec.values)) > 1) and not any(
                acts(fam.name, name, corner) for corner in _corners(checked)):
            other, value = ACTS_ONLY_WHERE[fam.name, name]
            raise LrsweepError(f"Argument `{name}` changes the schedule only where `{other}` is {value!r}, which "
                               f"this space never draws: each of its values would train the same schedule. "
                               f"Received: {name}={spec}, "
                               f"{other}={checked.get(other, fam.param(other).default)!r}")
    for corner in _corners(checked):
        try:
            fam.check(corner, epochs)
        except LrsweepError as e:  # values of a relation (base_lr < max_lr) the user wrote as ranges
            if not any(f"{name}=" in str(e) for name in drawn):
                raise
            ranges = ", ".join(f"{name}={spec}" for name, spec in drawn.items())
            raise LrsweepError(f"{e}: values the search could draw from {ranges}") from None
    return checked


@dataclass(frozen=True)
class Sweep:
    """A learning-rate schedule sweep: one dataset and model, many schedules.

    Give either `families` (a search: `num_samples` trials sampled by Optuna's TPE, the
    family a categorical choice and each family's parameters sampled only when it is
    chosen) or `configs` (fixed configurations, each run as given, no search).

    `families` maps a family name to its parameter space, each parameter a `Range`, a
    `Choice` or a fixed value. A plain family name uses `optimizer`; an adaptive
    optimizer's name (`"adam"`) is that optimizer with a constant rate; `"adam/cosine"`
    names both. Every parameter not given takes the family's default.

    `early_stopping`: "asha" (a search's default), "budget" (see the README's Ranking), or
    None, every trial to `max_epochs` (the default for `configs`, which run as given).

    `checkpoint_seconds`: a running trial saves its model and optimizer state into
    `storage` at the end of an epoch once this many seconds have passed since its start or
    its last save (None: never); a retried or resumed trial goes on from there.
    """

    name: str
    families: Mapping[str, Mapping[str, Any]] | None = None
    configs: Sequence[Mapping[str, Any]] | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    subsample: int | None = None
    validation_split: float | None = 0.2
    scale: str = "auto"
    model: str = "mlp"
    model_args: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    optimizer_args: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    max_epochs: int = 20
    granularity: str = "epoch"
    num_samples: int = 20
    seed: int = 0
    early_stopping: str | None = "auto"
    grace_period: int = 1
    reduction_factor: float = 3
    metric: str = "val_accuracy"
    mode: str | None = None
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    max_failures: int = 2
    confirm_seeds: int | None = None
    results: str = "results"
    storage: str | None = None
    checkpoint_seconds: float | None = 60.0

    def __post_init__(self):
        check_name("name", self.name, NAME_LENGTH - RUN_TIME_LENGTH)
        if (self.families is None) == (self.configs is None):
            raise LrsweepError("A sweep needs exactly one of `families` (a search) or `configs` (fixed runs). "
                               f"Received: families={self.families!r}, configs={self.configs!r}")
        _integer("max_epochs", self.max_epochs, 1)
        _integer("num_samples", self.num_samples, 1)
        _integer("batch_size", self.batch_size, 1)
        _integer("seed", self.seed, 0, MAX_SEED)
        _integer("max_failures", self.max_failures, 0)
        if self.checkpoint_seconds is not None:
            _number("checkpoint_seconds", self.checkpoint_seconds, "a number of seconds > 0, or None (never)",
                    lambda v: v > 0)
        if self.confirm_seeds is None:  # a search confirms its winners; fixed configs run as given
            object.__setattr__(self, "confirm_seeds", CONFIRM_SEEDS if self.configs is None else 0)
        if self.confirm_seeds != 0 and not whole(self.confirm_seeds, 2, MAX_SEED):  # an interval needs two runs
            raise _field_error("confirm_seeds", f"0 (no confirmation) or an integer from 2 to {MAX_SEED}",
                               self.confirm_seeds)
        if self.seed > MAX_SEED - self.confirm_seeds:  # NumPy's and Optuna's seeds; confirmation uses seed+1..+K
            raise _field_error("seed", f"at most 2**32 - 1 - confirm_seeds = {MAX_SEED - self.confirm_seeds} (the "
                                       f"confirmation runs take seed + 1 ... seed + {self.confirm_seeds})", self.seed)
        _integer("grace_period", self.grace_period, 1)
        _number("reduction_factor", self.reduction_factor, "> 1", lambda v: v > 1)
        if self._rung_count > self.max_epochs:
            raise LrsweepError(f"Argument `reduction_factor` must make no more rungs than epochs: it makes "
                               f"{self._rung_count:.0f} "
                               f"rungs for max_epochs={self.max_epochs}, grace_period={self.grace_period}. Received: "
                               f"reduction_factor={self.reduction_factor!r}")
        if self.subsample is not None:
            _integer("subsample", self.subsample, 1)
        if self.validation_split is not None:
            _number("validation_split", self.validation_split, "in (0, 1) or None (the dataset's test split)",
                    lambda v: 0 < v < 1)
        _one_of("scale", self.scale, ("auto", "none", "unit", "standard"))
        if not isinstance(self.model_args, Mapping):
            raise _field_error("model_args", "a dict", self.model_args)
        check_model(self.model, self.model_args)
        _one_of("optimizer", self.optimizer, tuple(OPTIMIZERS))
        if not isinstance(self.optimizer_args, Mapping):
            raise _field_error("optimizer_args", "a dict", self.optimizer_args)
        for key in self.optimizer_args:
            if not OPTIMIZER_ARGS.get(self.optimizer):
                raise LrsweepError(f"Argument `optimizer_args` must be empty for optimizer={self.optimizer!r}, which "
                                   f"takes none here. Received: optimizer_args={dict(self.optimizer_args)!r}")
            _one_of("optimizer_args", key, OPTIMIZER_ARGS[self.optimizer])
        object.__setattr__(self, "optimizer_args", _checked_optimizer_args(self.optimizer_args))
        _one_of("granularity", self.granularity, GRANULARITIES)
        if self.early_stopping == "auto":  # a search stops its poor trials early; fixed configs run as given
            object.__setattr__(self, "early_stopping", "asha" if self.configs is None else None)
        _one_of("early_stopping", self.early_stopping, EARLY_STOPPING + (None,))
        _one_of("metric", self.metric, METRICS)
        if self.mode is None:
            object.__setattr__(self, "mode", _mode_of(self.metric))
        _one_of("mode", self.mode, ("min", "max"))
        if not isinstance(self.resources, Mapping) or set(self.resources) - {"cpu", "gpu"}:
            raise _field_error("resources", "a dict with keys 'cpu' and 'gpu'", self.resources)
        # Ray counts resources in units of 0.0001 and refuses a request of less than one
        _number("resources['cpu']", self.resources.get("cpu", 1), f">= {RESOURCE_UNIT}", lambda v: v >= RESOURCE_UNIT)
        # and a GPU request above one GPU that is not a whole number of them
        _number("resources['gpu']", self.resources.get("gpu", 0), f"0, a fraction in [{RESOURCE_UNIT}, 1] or a "
                f"whole number", lambda v: v == 0 or RESOURCE_UNIT <= v <= 1 or (v > 1 and v == int(v)))
        for name, required in (("results", True), ("dataset", True), ("data_dir", False), ("storage", False)):
            value = getattr(self, name)
            if name != "dataset" and isinstance(value, os.PathLike):  # a pathlib.Path
                value = os.fspath(value)
                object.__setattr__(self, name, value)
            if (required or value is not None) and (not isinstance(value, str) or not value):
                raise _field_error(name, "a non-empty string" + ("" if required else " or None"), value)
            rule = name in ("results", "storage") and value and location_error(value, name)
            if rule:
                raise _field_error(name, rule, value)
            if name == "storage" and value and value.startswith("file://"):  # a folder of this machine: checked,
                value = urllib.parse.unquote(urllib.parse.urlparse(value).path)  # locked and warned of as one, as
                object.__setattr__(self, name, value)  # pyarrow reads it (a URI is taken as remote)
            if name != "dataset" and value and value.startswith("~"):  # --results=~/x: the shell leaves that ~
                object.__setattr__(self, name, os.path.expanduser(value))
        self.arms  # checks every family and parameter

    @property
    def cpus(self):
        return self.resources.get("cpu", 1)

    @property
    def gpus(self):
        return self.resources.get("gpu", 0)

    @property
    def arms(self):
        """Every (optimizer, family) of the sweep with its checked space, by label."""
        arms = {}
        if self.families is not None:
            if not isinstance(self.families, Mapping) or not self.families:
                raise _field_error("families", "a non-empty dict of family name -> parameters", self.families)
            for key, space in self.families.items():
                arm = self._arm(key, space, f"families[{key!r}]")
                if arm.label in arms:
                    raise LrsweepError(f"Family {arm.label!r} is named twice in `families`. Received: {key!r}")
                arms[arm.label] = arm
            return arms
        arms = {}
        for arm in self.fixed_configs:
            arms.setdefault(arm.label, arm)
        return arms

    def _arm(self, key, space, where):
        try:
            optimizer, name = parse_arm_label(key)
            optimizer = optimizer or self.optimizer
            if not isinstance(space, Mapping):
                raise _field_error(where, "a dict of parameter -> Range, Choice or value", space)
            checked = _check_space(family(name), space, self.max_epochs)
        except LrsweepError as e:
            raise LrsweepError(f"{where}: {e}") from None
        return Arm(f"{optimizer}/{name}", optimizer, name, checked)

    @property
    def fixed_configs(self):
        """`configs` as one Arm each, its space the fixed parameters; None for a search."""
        if self.configs is None:
            return None
        if isinstance(self.configs, (str, bytes)) or not isinstance(self.configs, Sequence) or not self.configs:
            raise _field_error("configs", "a non-empty list of dicts with a 'family' key", self.configs)
        arms = []
        for i, config in enumerate(self.configs):
            if not isinstance(config, Mapping) or "family" not in config:
                raise _field_error(f"configs[{i}]", "a dict with a 'family' key", config)
            if not isinstance(config["family"], str):
                raise _field_error(f"configs[{i}]['family']", "a family name", config["family"])
            params = {k: v for k, v in config.items() if k != "family"}
            if any(isinstance(v, (Range, Choice)) for v in params.values()):
                raise LrsweepError(f"`configs[{i}]` takes fixed values, not Range or Choice. Received: {config!r}")
            arms.append(self._arm(config["family"], params, f"configs[{i}]"))
        return arms

    @property
    def space_size(self):
        """How many configurations the search space holds: None where a float Range gives it
        no end. A search draws each once (`run.search.NewConfigs`)."""
        from lrsweep.sweep.space import space_size

        return space_size(self.arms)

    @property
    def trial_count(self):
        """The trials of the search (of its first rung, for early_stopping="budget"): its
        num_samples, or each configuration of a smaller space once."""
        if self.configs is not None:
            return len(self.configs)
        return min(self.num_samples, self.space_size or self.num_samples)

    @property
    def _rung_count(self):
        """How many rungs Ray's ASHA makes (`_Bracket`'s MAX_RUNGS), before rounding down."""
        return math.log(self.max_epochs / self.grace_period) / math.log(self.reduction_factor) + 1

    @property
    def rungs(self):
        """The epochs at which early stopping judges a trial: `grace_period *
        reduction_factor ** k` up to `max_epochs` (the formula of Ray's ASHA `_Bracket`),
        rounded up to the epoch that reaches them."""
        count = int(self._rung_count)
        return sorted({math.ceil(self.grace_period * self.reduction_factor ** k) for k in range(max(count, 0))})

    @property
    def budgets(self):
        """(epochs, trials) of each rung of early_stopping="budget" (successive halving from
        scratch): every trial of the search at the first rung's epochs, then the best
        1/reduction_factor of each rung trained again at the next, up to `max_epochs`; a
        lone trial goes straight to `max_epochs`. A rung is kept only when `reduction_factor`
        times its epochs still fit in `max_epochs`: nothing carries over from one rung to
        the next, so a rung just short of the end (27 of 30 epochs) would cost almost a
        full run per trial to pick the few that train the full run again."""
        plan, trials = [], self.trial_count
        for budget in [r for r in self.rungs if r * self.reduction_factor <= self.max_epochs]:
            if trials == 1:  # a lone trial goes straight to the full budget
                break
            plan.append((budget, trials))
            trials = max(1, int(trials / self.reduction_factor))
        return plan + [(self.max_epochs, trials)]

    def training_settings(self):
        """How this sweep's trials train (data, model, optimizer, epochs, metric, seed,
        resources) as JSON-ready data, the dataset's paths made absolute. Stored with each
        trial, so that `fit-schedule --confirm` trains a schedule again as the trial trained:
        `Sweep(name=..., configs=[...], **settings)`."""
        prefix, colon, path = self.dataset.partition(":")
        dataset = self.dataset
        if colon and prefix in ("csv", "npz"):
            body, question, query = path.partition("?")
            dataset = f"{prefix}:{os.path.abspath(os.path.expanduser(body))}{question}{query}"
        local = self.storage and "://" not in self.storage
        return {**{name: getattr(self, name) for name in TRAINING_FIELDS}, "dataset": dataset,
                "data_dir": self.data_dir and os.path.abspath(self.data_dir),  # ~ expanded as the sweep was made
                "storage": os.path.abspath(self.storage) if local else self.storage}

    def with_overrides(self, **overrides):
        """A copy with the non-None `overrides` applied, checked again (command-line flags)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "num_samples" in changes and self.configs is not None:
            raise LrsweepError(f"Argument `num_samples` sets how many trials a search samples; this sweep runs its "
                               f"fixed configs as given ({len(self.configs)}). Received: num_samples={changes['num_samples']!r}")
        epochs, notes = changes.get("max_epochs"), []
        if whole(epochs, 1) and self.families is not None:  # a bad max_epochs is named by the check below
            changes["families"], notes = _within_epochs(self.families, epochs)
        sweep = dataclasses.replace(self, **changes) if changes else self
        for note in notes:  # once the sweep is good: bad input is one line
            warn(note)
        return sweep


def warn_of_mode(sweep):
    """A mode against the sweep's metric ranks the worst schedules first: allowed (the field is
    the user's), and almost always a slip, so said."""
    if sweep.mode != _mode_of(sweep.metric):
        warn(f"mode={sweep.mode!r} with metric={sweep.metric!r}: the best trial is the one with the "
             f"{'lowest' if sweep.mode == 'min' else 'highest'} {sweep.metric} (leave mode out: it follows the metric)")


def _mode_of(metric):
    """The mode a metric is judged by: the lowest loss, the highest accuracy."""
    return "min" if metric.endswith("loss") else "max"


def load_sweep(path):
    """The `SWEEP` of a sweep file; every problem with the file is one LrsweepError line."""
    if os.path.isdir(path):
        raise LrsweepError(f"Sweep file {path} is a folder: name the file in it that defines SWEEP")
    if not os.path.isfile(path):
        raise LrsweepError(f"Sweep file not found: {path}")
    # a YAML or JSON file read as Python fails on its first line: say what a sweep file is
    python = "" if path.endswith(".py") else " (a sweep file is Python: SWEEP = lrsweep.Sweep(...))"
    module_name = "lrsweep_sweep_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    # Python source whatever the file's name ends with, as `python FILE` reads it
    spec = importlib.util.spec_from_loader(module_name, importlib.machinery.SourceFileLoader(module_name, path))
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(os.path.abspath(path))
    before = set(sys.modules)
    sys.path.insert(0, folder)  # as `python FILE` does: a module beside the file imports (shared ranges, say)
    try:
        spec.loader.exec_module(module)
    except LrsweepError as e:
        raise LrsweepError(f"{path}: {e}") from None
    except SyntaxError as e:
        where = path if e.lineno is None else f"{path}:{e.lineno}"
        raise LrsweepError(f"{where}: SyntaxError: {e.msg}{python}") from None
    except (Exception, SystemExit) as e:  # sys.exit() in the file, too: it ends nothing but its reading
        frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(path)]
        where = f"{path}:{frames[-1].lineno}" if frames else path
        raise LrsweepError(f"{where}: {type(e).__name__}: {e}{python}".replace("\n", " ")) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
        # the modules and packages beside the file that it imported: another sweep file's folder has its own
        # (not lrsweep's own modules, where the file lies in a checkout of it)
        for name in set(sys.modules) - before:
            file = os.path.abspath(getattr(sys.modules[name], "__file__", None) or "/")
            if name.partition(".")[0] not in before and file.startswith(folder + os.sep):
                del sys.modules[name]
    sweep = getattr(module, "SWEEP", None)
    if not isinstance(sweep, Sweep):
        raise LrsweepError(f"{path}: defines no `SWEEP = lrsweep.Sweep(...)`. Received: SWEEP={sweep!r}")
    sys.modules.pop(module_name, None)
    return sweep
