"""The sweep as one conditional search space, for Optuna's define-by-run API (through
Ray's `OptunaSearch`), and the trial configurations it produces.

A trial config is `{"family": "sgd/step", "sgd": {"step": {"initial_lr": ..., ...}}}`: the
family is a categorical choice, and each family's parameters are sampled only when it is
chosen, under names of their own (`sgd/step/initial_lr`), so that TPE never mixes one
family's observations of a parameter with another's.
"""

import itertools
import math

from lrsweep.sweep.spec import Choice, Range


def _key(label, name):
    """A family's parameter as the space names it: `sgd/step/initial_lr`."""
    return f"{label}/{name}"


class SearchSpace:
    """Define-by-run space of a sweep's arms. A module-level class holding plain data, so
    that Tune can pickle it with the searcher's state (`Tuner.restore`)."""

    def __init__(self, arms):
        self.arms = {label: dict(arm.space) for label, arm in arms.items()}

    def __call__(self, trial):
        label = trial.suggest_categorical("family", list(self.arms))
        fixed = {}
        for name, spec in self.arms[label].items():
            key = _key(label, name)
            if isinstance(spec, Range) and spec.integer:
                trial.suggest_int(key, spec.low, spec.high, log=spec.log)
            elif isinstance(spec, Range):
                trial.suggest_float(key, spec.low, spec.high, log=spec.log)
            elif isinstance(spec, Choice):
                trial.suggest_categorical(key, list(spec.values))
            else:
                fixed[key] = spec
        return fixed

    def optuna_params(self, label, params):
        """The Optuna params of family `label` with parameters `params` (all of the family's,
        as the store keeps them); None where the space has no such family or parameter."""
        drawn = [name for name, spec in self.arms.get(label, {}).items() if isinstance(spec, (Range, Choice))]
        if label not in self.arms or any(name not in params for name in drawn):
            return None
        return {"family": label, **{_key(label, name): params[name] for name in drawn}}

    def undrawn(self, drawn):
        """Optuna params of a configuration that `drawn` (a set of `params_key`s) does not
        hold: the first of a family of finitely many, else a family of no end named alone
        (Optuna draws its parameters; each time another, in turn); None where there is none."""
        endless = []
        for label, space in self.arms.items():
            axes = _axes(label, space)
            if axes is None:
                endless.append(label)
                continue
            for values in itertools.product(*axes.values()):
                params = {"family": label, **dict(zip(axes, values))}
                if params_key(params) not in drawn:
                    return params
        return {"family": endless[len(drawn) % len(endless)]} if endless else None


def params_key(params):
    """One sample's Optuna params as a set member: equal for the same configuration."""
    return tuple(sorted(params.items()))


def _axes(label, space):
    """{Optuna's name: the values it can take} of the drawn parameters of family `label`
    (its `Choice`s, without repeats, and its integer `Range`s); None where a float Range
    gives it no end."""
    axes = {}
    for name, spec in space.items():
        if isinstance(spec, Choice):
            axes[_key(label, name)] = list(dict.fromkeys(spec.values))
        elif isinstance(spec, Range) and spec.integer:
            axes[_key(label, name)] = range(spec.low, spec.high + 1)
        elif isinstance(spec, Range) and spec.low == spec.high:
            axes[_key(label, name)] = [spec.low]
        elif isinstance(spec, Range):
            return None
    return axes


def space_size(arms):
    """How many configurations `arms` hold: None where a float Range gives them no end."""
    sizes = [_axes(label, arm.space) for label, arm in arms.items()]
    return None if None in sizes else sum(math.prod(map(len, axes.values())) for axes in sizes)


def trial_config(arm, params):
    """The trial config of fixed `params` for `arm`, in the search space's shape."""
    return {"family": arm.label, arm.optimizer: {arm.family: dict(params)}}


def sampled_params(label, values):
    """The parameters of family `label` in one sample's flat values (Optuna's `trial.params`
    and the fixed values `SearchSpace` returned): what Tune unflattens into a trial config."""
    prefix = _key(label, "")
    return {key[len(prefix):]: value for key, value in values.items() if key.startswith(prefix)}
