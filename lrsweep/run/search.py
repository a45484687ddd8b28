"""How a sweep picks its trials: Optuna's TPE over the conditional space, or the fixed
`configs` in order."""

import pickle
import warnings

from ray.tune.search import Searcher

from lrsweep.sweep.space import SearchSpace, trial_config


class FixedConfigs(Searcher):
    """The sweep's `configs`, each run once as given, in order (no search)."""

    def __init__(self, configs, metric, mode):
        super().__init__(metric=metric, mode=mode)
        self.configs, self.next = list(configs), 0

    def suggest(self, trial_id):
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return self.configs[self.next - 1]

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass

    def save(self, checkpoint_path):
        with open(checkpoint_path, "wb") as f:
            pickle.dump((self.configs, self.next), f)

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as f:
            self.configs, self.next = pickle.load(f)


def search_algorithm(sweep):
    """(Tune search algorithm, number of trials) of a sweep."""
    if sweep.configs is not None:
        configs = [trial_config(arm, arm.space) for arm in sweep.fixed_configs]
        return FixedConfigs(configs, sweep.metric, sweep.mode), len(configs)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate TPE
    # group=True: TPE models each family's parameters together, as the conditional space they are.
    sampler = optuna.samplers.TPESampler(seed=sweep.seed, multivariate=True, group=True,
                                         n_startup_trials=min(10, max(2, sweep.num_samples // 3)))
    return OptunaSearch(space=SearchSpace(sweep.arms), metric=sweep.metric, mode=sweep.mode,
                        sampler=sampler), sweep.num_samples
