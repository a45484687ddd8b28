"""Fit every schedule family to a trace of learning rates (imports Keras and scipy).

A trace is the rate in effect during each epoch of a trial: a family's own curve, a plateau
trial's steps that followed its validation loss, or a rate some other process chose (a
population-based-training member's). Fitting every family to it says which closed form
reproduces it, with which parameters: a schedule that can be written down, previewed and
trained again.

Each family is evaluated by the very Keras schedule a trial trains with (`build`, per-epoch
granularity), so a fitted curve is the curve that family trains. Continuous parameters are
fitted by `scipy.optimize.least_squares` on the log of the rates (rates span decades, and
a relative error weighs the same at 0.1 and at 0.0001), each in a space where its bounds
cannot be crossed; integer and string parameters are tried value by value.
"""

import itertools
import math

import numpy as np

from lrsweep.errors import LrsweepError
from lrsweep.schedules.registry import FAMILIES, RATE_RULE, acts

# `plateau`'s rate follows the validation loss: no curve of the epoch to fit. What a
# plateau trial did is a trace like any other, and `step` fits it.
FITTED = tuple(name for name in FAMILIES if name != "plateau")
# The store's per-epoch rate cannot tell the two units of `time_based` apart: a decay per
# optimizer step is a decay per epoch `steps_per_epoch` times larger.
FIXED = {"decay_unit": "epoch"}
TINY = 1e-30

# How a continuous parameter is fitted, by its bound: (to the fitted space, back, lower
# bound, upper bound) in the fitted space. Open bounds are kept a printable distance away
# (pct_start in [6e-6, 0.999994], div >= 1.0001), and within float32, whose bounds a
# parameter must keep too (k=1e-50 is 0 there, alpha=1-1e-9 is 1), so a printed fit is a
# valid command line.
_LOG = (math.log, math.exp, math.log(TINY), math.log(1e38))
SPACES = {
    RATE_RULE: _LOG,
    "> 0": _LOG,
    ">= 0": (lambda v: v, lambda x: x, 0.0, 1e38),
    "in (0, 1)": (lambda v: math.log(v / (1 - v)), lambda x: 1 / (1 + math.exp(-x)), -12.0, 12.0),
    "> 1": (lambda v: math.log(v - 1), lambda x: 1 + math.exp(x), math.log(1e-4), math.log(1e38)),
    "in [0, 1)": (lambda v: v, lambda x: x, 0.0, 1 - 1e-6),
    "in (0, 1]": (lambda v: v, lambda x: x, 1e-9, 1.0),
}


# Integer and string combinations past this many are screened at their starting points.
SCREENED = 8
# Integer parameters are tried at every value up to this one (a textbook step schedule drops
# every 15, 20, 25 or 30 epochs), then on a geometric ladder to the trace's length.
DENSE = 100
# Fitting steps per free parameter, by effort.
EVALUATIONS = {"start": 0, "quick": 10, "full": 60}
# Bounds a parameter's default may sit on, which a fit in an open space never reaches.
CLOSED = (">= 0", "in [0, 1)", "in (0, 1]")


def family_rates(name, params, epochs, count):
    """The rate `name` with `params` gives in epochs 1..count of an `epochs`-long run, as
    one vectorized call of the family's Keras schedule."""
    learning_rate, _ = FAMILIES[name].build(params, 1, epochs, "epoch")
    if isinstance(learning_rate, float):
        return np.full(count, learning_rate)
    return np.asarray(learning_rate(np.arange(count, dtype="float32")), dtype="float64")


def fit_family(name, rates, epochs):
    """The parameters of family `name` whose curve comes closest to `rates` (the rate in
    effect during epochs 1..len(rates) of an `epochs`-long run), and the fit's errors:
    `{"family", "params", "error", "max_error"}` (see `_scored`). None when no valid
    parameters exist (`warmup_epochs` with too few epochs).

    Integer parameters are tried on a grid (every value up to `DENSE`, then a geometric
    ladder to the trace's length) and string ones value by value. Past `SCREENED` combinations,
    only those closest at their starting point get a quick fit; the best one's neighbours
    get one too, and the winner is fitted again in full.
    """
    rates = np.asarray(rates, dtype="float64")
    discrete = [p for p in FAMILIES[name].params if p.kind is not float and p.name not in FIXED]
    combinations = list(itertools.product(*(_choices(p, len(rates), epochs) for p in discrete)))
    tried = {}

    def attempt(values, effort):
        fit = _fit_continuous(name, dict(zip((p.name for p in discrete), values)), rates, epochs, effort)
        if effort != "start":
            tried[values] = fit
        return fit

    if len(combinations) > SCREENED:
        at_start = {values: attempt(values, "start") for values in combinations}
        ranked = [values for _, values in sorted((fit["error"], values) for values, fit in at_start.items()
                                                 if fit is not None)]
        # and the closest of each string choice (cyclical's exp_range starts at a guessed
        # gamma, far behind the other modes until fitted)
        kept = ranked[:SCREENED] + [next(values for values in ranked if values[i] == choice)
                                    for i, p in enumerate(discrete) if p.kind is str for choice in p.choices
                                    if any(values[i] == choice for values in ranked)]
        combinations = list(dict.fromkeys(kept))
    for values in combinations:
        attempt(values, "quick")
    best = _closest(tried)
    if best is None:
        return None
    for values in itertools.product(*(_around(p, v, len(rates), epochs) for p, v in zip(discrete, best))):
        if values not in tried:
            attempt(values, "quick")
    return attempt(_closest(tried), "full")


def _closest(tried):
    """The values of the closest fit; within 1e-6 of each other, the first in the grid's
    order (the default `mode`, the shorter integer), not float noise's choice."""
    found = [(round(fit["error"], 6), order, values)
             for order, (values, fit) in enumerate(tried.items()) if fit is not None]
    return min(found)[2] if found else None


def valid_trace(rates):
    """A trace holds at least one rate, and every rate is finite and > 0."""
    return len(rates) > 0 and all(math.isfinite(r) and r > 0 for r in rates)


def fit_families(rates, epochs, families=FITTED, own=None):
    """`fit_family` for each of `families`, closest first (of equals, family `own`: the
    trial's own, where it is one of them)."""
    if not valid_trace(rates):
        raise LrsweepError(f"A rate trace must hold rates > 0. Received: {list(rates)[:5]}...")
    fits = [fit for fit in (fit_family(name, rates, epochs) for name in families) if fit is not None]
    # equally close as the table shows them (to 0.01%: a trace is float32, the parameters 6
    # digits), the family of fewer parameters first (those fitted, not time_based's fixed
    # decay_unit): a flat trace is constant's, not that of a five-parameter cyclical schedule
    # fitting the float32 noise; then the trial's own (a time_based trace is exponential's too)
    return sorted(fits, key=lambda fit: (round(fit["error"], 4), len(set(fit["params"]) - set(FIXED)),
                                         fit["family"] != own))


def _choices(p, count, epochs):
    if p.kind is str:
        return p.choices
    # An integer that counts epochs: beyond the trace's length, every value draws the same.
    ladder = set(range(DENSE + 1)) | {int(v) for v in np.round(np.geomspace(DENSE, max(count, DENSE), 8))}
    return [v for v in sorted(ladder) if _valid_count(p, v, count, epochs)]


def _around(p, value, count, epochs):
    """`value` and, for an integer, its neighbours within 3."""
    if p.kind is str:
        return [value]
    return [v for v in range(value - 3, value + 4) if _valid_count(p, v, count, epochs)]


def _valid_count(p, v, count, epochs):
    return p.test(v) and v <= max(count, 1) and (not p.below_epochs or v < epochs)


def _starts(free, rates, epochs, fixed):
    """Two starting points: one read off the trace, one an order of magnitude away. For
    `step`, whose log rate is linear in log(initial_lr) and log(drop) once `epochs_drop` is
    fixed, the first is their least-squares solution: the screening of `epochs_drop` then
    compares each value at its own best rates, not all at one guessed drop."""
    low, high, first, last = rates.min(), rates.max(), rates[0], rates[-1]
    peak = int(np.argmax(rates))
    slope = max((math.log(first) - math.log(last)) / max(len(rates) - 1, 1), 1e-3)
    guess = {"initial_lr": first, "base_lr": low, "max_lr": high if high > low else low * 2,
             "end_lr": low * 1e-3, "drop": 0.5, "k": slope, "decay": slope, "power": 1.0,
             "alpha": min(low / high, 0.9), "pct_start": min(max((peak + 0.5) / epochs, 0.05), 0.95),
             "div": max(high / first, 1.5), "final_div": max(high / last, 1.5), "gamma": 0.95}
    if "epochs_drop" in fixed:
        guess.update(_step_rates(rates, fixed["epochs_drop"]))
    other = {**guess, "drop": 0.1, "k": slope * 10, "decay": slope * 10, "power": 3.0, "gamma": 0.7,
             "initial_lr": high, "pct_start": 0.3, "div": 25.0, "final_div": 1e4}
    return [[SPACES[p.rule][0](start[p.name]) for p in free] for start in (guess, other)]


def _step_rates(rates, epochs_drop):
    """`initial_lr` and `drop` of the step curve dropping every `epochs_drop` epochs closest
    to `rates` in log (a linear least-squares fit), `drop` kept inside (0, 1)."""
    drops = np.arange(len(rates)) // epochs_drop
    if drops[-1] == 0:  # no drop within the trace: any drop fits
        return {"initial_lr": float(np.exp(np.mean(np.log(rates))))}
    (log_initial, log_drop), *_ = np.linalg.lstsq(np.stack([np.ones(len(rates)), drops], axis=1), np.log(rates),
                                                  rcond=None)
    return {"initial_lr": float(np.exp(log_initial)), "drop": float(np.clip(np.exp(log_drop), 1e-5, 1 - 1e-5))}


def _fit_continuous(name, discrete, rates, epochs, effort):
    """The closest curve of family `name` with its integer and string parameters fixed at
    `discrete`, by `effort`: "start" (the closer of the two starting points, unfitted:
    cosine's rate at its first warm-up epoch is no guess of its initial_lr), "quick" (a
    short fit from the first) or "full" (long fits from each starting point, also with the parameters
    whose default sits on a closed bound, `end_lr=0`, `alpha=0`, `gamma=1`, held there:
    an optimizer only creeps towards a bound)."""
    family = FAMILIES[name]
    fixed = {**{p.name: FIXED[p.name] for p in family.params if p.name in FIXED}, **discrete}
    free = [p for p in family.params if p.kind is float and acts(name, p.name, fixed)]
    fixed.update({p.name: p.default for p in family.params if p.kind is float and p not in free})
    variants = [free]
    bounded = [p for p in free if p.rule in CLOSED]
    if effort == "full" and bounded:
        variants.append([p for p in free if p not in bounded])
    fits = []
    for variant in variants:
        pinned = {**fixed, **{p.name: p.default for p in free if p not in variant}}
        for start in _starts(variant, rates, epochs, fixed)[:1 if effort == "quick" else 2]:
            params = _printable(family, _least_squares(name, variant, pinned, start, rates, epochs,
                                                       EVALUATIONS[effort]), epochs)
            if params is not None:
                fits.append(_scored(name, params, rates, epochs))
    return min(fits, key=lambda fit: fit["error"]) if fits else None


def _printable(family, params, epochs):
    """`params` rounded to six significant digits, as a user would type them back, if the
    family still takes them so (cosine's alpha just under 1 would round to 1, cyclical's
    base_lr to its max_lr on a flat trace); else as they are; None if the family refuses
    even those (the closest curve lies outside it: cyclical's base above its max)."""
    for candidate in ({k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in params.items()}, params):
        try:
            return family.check(candidate, epochs)
        except LrsweepError:
            continue
    return None


def _least_squares(name, free, fixed, start, rates, epochs, evaluations):
    """`fixed` with the `free` parameters fitted from `start` (in their fitted spaces)."""
    from scipy.optimize import least_squares

    spaces = [SPACES[p.rule] for p in free]
    lower, upper = np.array([s[2] for s in spaces]), np.array([s[3] for s in spaces])

    def params_of(x):
        return {**fixed, **{p.name: space[1](float(v)) for p, space, v in zip(free, spaces, x)}}

    if not free or not evaluations:
        return params_of(np.clip(start, lower, upper) if free else [])

    last = {}

    def residuals(x):
        key = x.tobytes()
        if key not in last:
            last.clear()
            try:
                last[key] = _log_ratio(name, params_of(x), rates, epochs)
            except (OverflowError, ValueError, ZeroDivisionError):
                last[key] = np.full(len(rates), 1e3)
        return last[key]

    def jacobian(x, at_x):
        # Forward differences 1e-4 wide: the schedules compute in float32, where scipy's
        # own steps (1.5e-8 wide at 0) see a flat curve.
        steps = 1e-4 * np.maximum(1.0, np.abs(x))
        steps = np.where(x + steps > upper, -steps, steps)
        return np.stack([(residuals(x + h * one) - at_x) / h for h, one in zip(steps, np.eye(len(x)))], axis=1)

    start = np.clip(start, np.nextafter(lower, 1), np.nextafter(upper, -1))
    fitted = least_squares(residuals, start, jac=lambda x: jacobian(x, residuals(x)), bounds=(lower, upper),
                           x_scale="jac", max_nfev=evaluations * len(free))
    return params_of(fitted.x)


def _log_ratio(name, params, rates, epochs):
    curve = family_rates(name, params, epochs, len(rates))
    return np.where(np.isfinite(curve), np.log(np.maximum(curve, TINY)), -1e3) - np.log(rates)


def _scored(name, params, rates, epochs):
    """The fit's errors as factors: exp of the root mean square, and of the largest, of the
    log ratio between the curve and the trace, minus one (0.1: off by 10%, either way)."""
    ratio = np.abs(_log_ratio(name, params, rates, epochs))
    return {"family": name, "params": params, "error": float(np.expm1(np.sqrt(np.mean(ratio ** 2)))),
            "max_error": float(np.expm1(ratio.max()))}
