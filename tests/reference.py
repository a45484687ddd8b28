"""The SPEC's schedule formulas, written out plainly and independently of lrsweep's code:
the yardstick for the Keras classes and for the `lr` column of a real sweep."""

import math


def rate(family, p, e, E):
    """Learning rate in effect during (0-based) epoch progress `e` of `E` epochs."""
    if family == "constant":
        return p["initial_lr"]
    if family == "time_based":
        return p["initial_lr"] / (1 + p["decay"] * e)
    if family == "step":
        return p["initial_lr"] * p["drop"] ** math.floor(e / p["epochs_drop"])
    if family == "exponential":
        return p["initial_lr"] * math.exp(-p["k"] * e)
    if family == "polynomial":
        end = p.get("end_lr", 0.0)
        return (p["initial_lr"] - end) * (1 - e / E) ** p["power"] + end
    if family == "cosine":
        w, alpha = p.get("warmup_epochs", 0), p.get("alpha", 0.0)
        if e < w:
            return p["initial_lr"] * (e + 1) / (w + 1)
        return p["initial_lr"] * (alpha + (1 - alpha) * (1 + math.cos(math.pi * (e - w) / (E - w))) / 2)
    if family == "cyclical":
        c = math.floor(1 + e / (2 * p["step_size"]))
        x = abs(e / p["step_size"] - 2 * c + 1)
        mode = p.get("mode", "triangular")
        s = {"triangular": 1.0, "triangular2": 1 / 2 ** (c - 1), "exp_range": p.get("gamma", 1.0) ** e}[mode]
        return p["base_lr"] + (p["max_lr"] - p["base_lr"]) * max(0.0, 1 - x) * s
    if family == "one_cycle":
        pct, div, final_div = p.get("pct_start", 0.3), p.get("div", 25.0), p.get("final_div", 1e4)
        peak = pct * E
        lo, end = p["max_lr"] / div, p["max_lr"] / final_div
        if e < peak:
            return lo + (p["max_lr"] - lo) * (1 - math.cos(math.pi * e / peak)) / 2
        return end + (p["max_lr"] - end) * (1 + math.cos(math.pi * (e - peak) / (E - peak))) / 2
    raise KeyError(family)


def plateau_rates(p, epochs):
    """ReduceLROnPlateau when the validation loss never improves after the first epoch."""
    rates, lr, wait = [], p["initial_lr"], 0
    for e in range(epochs):
        rates.append(lr)
        if e > 0:
            wait += 1
            if wait >= p.get("patience", 10):
                lr, wait = max(lr * p.get("factor", 0.1), p.get("min_lr", 0.0)), 0
    return rates
