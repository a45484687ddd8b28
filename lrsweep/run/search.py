"""How a sweep picks its trials: Optuna's TPE over the conditional space, or the fixed
`configs` in order; and how Tune starts and stops them (ASHA, or every trial to its end)."""

import math
import pickle
import warnings

from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from lrsweep.errors import warn
from lrsweep.sweep.space import SearchSpace, params_key, trial_config


class FixedConfigs(Searcher):
    """The sweep's `configs` (or a rung's, or the confirmation runs), each run once as
    given, in order (no search)."""

    # what one unpickled from a `tuner.pkl` of before these were kept has; `stored`: no `resume_with`
    handed, ahead, stored = None, frozenset(), None

    def __init__(self, configs, metric, mode):
        super().__init__(metric=metric, mode=mode)
        self.configs, self.next = list(configs), 0
        self.handed = {}  # trial id -> the index of its config
        self.ahead = set()  # indices after `next` counted as done (`resume_with`)

    def resume_with(self, stored, key_of, counted):
        """Before a `--resume`, as `NewConfigs.resume_with`: of the `stored` trials (each
        with its `key`), those that this searcher's restored state did not hand out count as
        done, each for a config still to hand out of the same key (`key_of(config)`), which
        is not run again."""
        self.stored, self.key_of, self.counted = stored, key_of, counted

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        self.configs, self.next = saved[:2]
        # None: saved before the ids were kept; `spent` too, as Tune's restored generator may
        # ask no more (`driver._all_drawn`)
        self.handed, self.spent = (*saved[2:], None, False)[:2]
        stored, self.stored = self.stored, None
        if stored and self.handed is not None:
            _count_safely(lambda: self._count_stored(stored))
        self.ahead = {index for index in (self.handed or {}).values() if index >= self.next}

    def _count_stored(self, stored):
        left, done = {}, set(self.handed.values())  # key -> indices still to hand out
        for index in range(self.next, len(self.configs)):
            if index not in done:
                left.setdefault(self.key_of(self.configs[index]), []).append(index)
        told = []
        for trial in stored:
            if trial["trial_id"] not in self.handed and left.get(trial["key"]):
                self.handed[trial["trial_id"]] = left[trial["key"]].pop(0)
                told.append(trial)
        if told:
            self.counted(told)

    def suggest(self, trial_id):
        while self.next in self.ahead:
            self.next += 1
        if self.next >= len(self.configs):
            self.spent = True  # every config handed out, or counted as done (`driver._all_drawn`)
            return Searcher.FINISHED
        if self.handed is not None:
            self.handed[trial_id] = self.next
        self.next += 1
        return self.configs[self.next - 1]

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass

    def save(self, checkpoint_path):
        with open(checkpoint_path, "wb") as f:
            pickle.dump((self.configs, self.next, self.handed, getattr(self, "spent", False)), f)


def _count_safely(count):
    """`count()` the trials stored after Tune's last save (`resume_with`); where that fails,
    a warning: Tune would start the whole run over on any error of a searcher's restore."""
    try:
        count()
    except Exception as e:  # noqa: BLE001 -- whatever it is, the run goes on as before
        warn(f"the trials stored after Tune's last save before the launch stopped could not be counted "
             f"({type(e).__name__}: {e}): their configurations may run again")


class NewConfigs(OptunaSearch):
    """Ray's `OptunaSearch`, drawing each configuration once. A configuration drawn before
    (a family whose parameters are all fixed, a `Choice` of few values) would train the
    same way with the same seed: it is told to Optuna as pruned (TPE then ranks it among
    the worse trials and draws it less; told the earlier trial's value, it would draw a
    good one more), and Optuna draws again. After `DRAWS` repeats in a row, a configuration not drawn yet
    of a family of finitely many is put first in Optuna's queue (`Study.enqueue_trial`);
    where none is left, the search ends with the trials it has. The pruned copies count in
    TPE's start-up trials and in its share of good trials: a random start drawing copies
    is that much shorter."""

    DRAWS = 50
    # set by `resume_with` for the launch at hand, never saved with Tune's state
    _TRANSIENT = ("stored", "total", "counted")

    def resume_with(self, stored, total, counted):
        """Before a `--resume`: `stored` are the search's ended trials in the store, as
        dicts of `trial_id`, `label`, `params` (the family's, as stored), `status` and
        `value` (the metric Tune would have told); `total` its num_samples. As Tune restores
        this searcher's state, those of them that the state does not know (they began after
        Tune's last save before a kill, and ended before it) are told to Optuna as the
        trials they were, and go to `counted` (a callable); from then on they count towards
        `total`: the search draws that many fewer, and none of them again."""
        self.stored, self.total, self.counted = stored, total, counted

    def save(self, checkpoint_path):
        transient = {key: self.__dict__.pop(key) for key in self._TRANSIENT if key in self.__dict__}
        try:
            super().save(checkpoint_path)
        finally:
            self.__dict__.update(transient)

    def restore(self, checkpoint_path):
        super().restore(checkpoint_path)
        stored = self.__dict__.pop("stored", None)
        if stored:
            _count_safely(lambda: self._count_stored(stored))

    def _count_stored(self, stored):
        told = self._tell_stored(stored)
        if told:
            self.limit = self.total  # kept in Tune's state: Tune's own count leaves these out
            self.counted(told)

    def _tell_stored(self, stored):
        """Tell Optuna the `stored` trials it does not know, as done (`resume_with`)."""
        told = []
        for trial in stored:
            params = self._space.optuna_params(trial["label"], trial["params"])
            if trial["trial_id"] in self._ot_trials or params is None:
                continue
            self._ot_study.enqueue_trial(params)
            sample = self._ot_study.ask()
            self._suggest_from_define_by_run_func(self._space, sample)
            self._ot_study.tell(sample, trial["value"])
            self._ot_trials[trial["trial_id"]] = sample
            self._completed_trials.add(trial["trial_id"])
            told.append(trial)
        return told

    def suggest(self, trial_id):
        if getattr(self, "spent", False):  # a resumed search that had ended so
            return Searcher.FINISHED
        if len(self._ot_trials) >= getattr(self, "limit", float("inf")):  # with trials stored after Tune's last save
            self.spent = True
            return Searcher.FINISHED
        # Tune asks with a new trial id each time: the study holds the trials drawn before
        drawn = {params_key(trial.params) for trial in self._ot_study.get_trials(deepcopy=False)}
        for draw in range(self.DRAWS + 1):
            if draw == self.DRAWS:
                undrawn = self._space.undrawn(drawn)
                if undrawn is None:
                    break
                self._ot_study.enqueue_trial(undrawn)
            config = super().suggest(trial_id)
            sample = self._ot_trials[trial_id]
            if params_key(sample.params) not in drawn:
                return config
            self._ot_study.tell(sample, state=TrialState.PRUNED)  # a copy: its key is in `drawn` already
            del self._ot_trials[trial_id]
        self.spent = True
        warn(f"the search space holds no configuration it has not drawn: the search ends with the "
             f"{len(drawn)} it has")
        return Searcher.FINISHED


def search_algorithm(sweep):
    """(Tune search algorithm, number of trials) of a sweep."""
    if sweep.configs is not None:
        configs = [trial_config(arm, arm.space) for arm in sweep.fixed_configs]
        return FixedConfigs(configs, sweep.metric, sweep.mode), len(configs)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate TPE
    # A resumed trial goes on from its checkpoint and reports again the epochs after it that
    # Optuna already has; Optuna keeps the first report of each, as it should, and warns
    warnings.filterwarnings("ignore", message="The reported value is ignored because this `step=",
                            category=UserWarning)
    # group=True: TPE models each family's parameters together, as the conditional space they are.
    sampler = optuna.samplers.TPESampler(seed=sweep.seed, multivariate=True, group=True,
                                         n_startup_trials=min(10, max(2, sweep.num_samples // 3)))
    return NewConfigs(space=SearchSpace(sweep.arms), metric=sweep.metric, mode=sweep.mode,
                        sampler=sampler), sweep.trial_count


class _NewestFirst:
    """Start the newest waiting trial first, where Tune's schedulers start the oldest.

    With `reuse_actors`, Tune hands an ended trial's actor to the waiting trial its
    scheduler picks, and removes the actor that trial was waiting for. Picking the oldest,
    it removed the actor that had waited longest: where trials end sooner than an actor
    starts (about 1 s: a stopped trial, a small model), the second slot's actor was
    removed again and again before it could start, and the sweep ran one trial at a time
    to its end (one sweep in about ten on two CPUs). Picking the newest lets the oldest
    waiting actor start. Once every slot trains, a search has at most one trial waiting,
    so trials still start in the searcher's order."""

    def choose_trial_to_run(self, tune_controller):
        return next((t for t in reversed(tune_controller.get_trials()) if t.status == Trial.PENDING), None)


class ToTheEnd(_NewestFirst, FIFOScheduler):
    """Every trial trains to its end."""

    def callbacks(self):
        return []


class EarlyStopping(_NewestFirst, ASHAScheduler):
    """ASHA: a trial below the best of its rung stops there."""

    def callbacks(self):
        """The Tune callbacks this scheduler needs: its rungs kept across `--resume`."""
        return [KeptScheduler(self)]

    def record_stored(self, results):
        """Put into the rungs the results of trials that Tune's saved state does not hold
        (stored after its last save before a kill: `NewConfigs.resume_with`), as ASHA would
        have recorded them: `results` is {trial id: {epoch: the metric it reported then}}. A
        trial reports at the epoch that reaches a rung (`Sweep.rungs`). One bracket, as
        lrsweep's ASHA has."""
        (bracket,) = self._brackets
        for milestone, recorded in bracket._rungs:
            epoch = math.ceil(milestone)
            for trial_id, values in results.items():
                if epoch in values:
                    recorded.setdefault(trial_id, self._metric_op * values[epoch])


class KeptScheduler(Callback):
    """Tune saves its searcher's state and its callbacks' for `--resume`, never its
    scheduler's. A resumed ASHA started with empty rungs: the first trial to reach a rung
    went through (nothing to compare it with), and the trials that went on from their
    checkpoints filled the rungs below their epoch with their later results. This callback
    carries the rungs in Tune's state, as plain data (each rung's epoch and each trial's
    result there), and puts them back into the scheduler Tune uses (the two come back from
    Tune's `tuner.pkl` as one object graph) before Tune adds the restored trials to it.

    Not ASHA's own `save` and `restore`: they pickle the whole scheduler, whose classes may
    change with Ray between a launch and its resume, and a failed callback restore makes
    Tune start the whole experiment again. Rungs that cannot be put back are left empty,
    with a warning."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def get_state(self):
        return {"rungs": [[(milestone, dict(recorded)) for milestone, recorded in bracket._rungs]
                          for bracket in self.scheduler._brackets]}

    def set_state(self, state):
        try:  # all or nothing
            updates = [(recorded, dict(dict(saved).get(milestone, {})))
                       for bracket, saved in zip(self.scheduler._brackets, state["rungs"], strict=True)
                       for milestone, recorded in bracket._rungs]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            warn(f"the early-stopping rungs of the run could not be restored ({type(e).__name__}: {e}); "
                 f"they fill again from the trials still to report")
            return
        for recorded, results in updates:
            recorded.update(results)


def scheduler(sweep):
    """How Tune starts and stops the trials of the sweep's search."""
    if sweep.early_stopping != "asha":  # none, or "budget": its rungs are experiments of their own
        return ToTheEnd()
    # "epoch", not Tune's training_iteration: a report may carry several epochs. A grace
    # period as long as the trials (`--max-epochs 1` on a sweep file's grace period of 2)
    # stops none of them, as in early_stopping="budget"; Ray's ASHA would refuse it.
    return EarlyStopping(time_attr="epoch", max_t=sweep.max_epochs, grace_period=min(sweep.grace_period,
                                                                                       sweep.max_epochs),
                         reduction_factor=sweep.reduction_factor)
