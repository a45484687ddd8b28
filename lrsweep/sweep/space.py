"""The sweep as one conditional search space, for Optuna's define-by-run API (through
Ray's `OptunaSearch`), and the trial configurations it produces.

A trial config is `{"family": "sgd/step", "sgd": {"step": {"initial_lr": ..., ...}}}`: the
family is a categorical choice, and each family's parameters are sampled only when it is
chosen, under names of their own (`sgd/step/initial_lr`), so that TPE never mixes one
family's observations of a parameter with another's.
"""

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


def trial_config(arm, params):
    """The trial config of fixed `params` for `arm`, in the search space's shape."""
    return {"family": arm.label, arm.optimizer: {arm.family: dict(params)}}


def sampled_params(label, values):
    """The parameters of family `label` in one sample's flat values (Optuna's `trial.params`
    and the fixed values `SearchSpace` returned): what Tune unflattens into a trial config."""
    prefix = _key(label, "")
    return {key[len(prefix):]: value for key, value in values.items() if key.startswith(prefix)}
