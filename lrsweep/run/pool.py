"""Warm trainers: processes that have imported TensorFlow and train the CPU trials of every
launch on their node, one trial at a time, outliving the launch that started them.

A Ray actor's process ends with the actor, and Tune's trial actors end with each Tune
experiment: every launch, and every stage of one (search, rungs, confirmation), started
new processes that imported TensorFlow again (5-7 s here, before the first epoch). A
trainer is a detached actor (`lifetime="detached"`, named in the `lrsweep` namespace)
that holds no resources of its own: the Tune trial that uses it holds the CPUs, on the
same node, and passes it the trial's config and a reference to the shared arrays; the
trainer trains and hands the reports back, which the trial gives to Tune. A launch that
joins a running cluster finds the trainers of earlier launches waiting, with TensorFlow
imported and their compiled models kept. A trainer idle for `LRSWEEP_TRAINER_IDLE_SECONDS`
(default 900) ends itself; `ray stop` ends it with the cluster. A trial given GPUs trains
in its own Tune actor instead, where Ray has set the cards it may use.
"""

import functools
import gc
import hashlib
import json
import math
import os
import queue
import sys
import threading
import time
import traceback

from lrsweep.errors import LrsweepError

NAMESPACE = "lrsweep"
IDLE_SECONDS = 900.0
# How often a trainer asks Ray whether the Tune trial it trains for is still alive.
CHECK_CLAIMANT_SECONDS = 10.0
# How long a claim waits for a stopped training to reach the end of its epoch.
STOPPING_SECONDS = 30.0
# How long a trainer keeps the reports of an ended training that no trial came to fetch.
FORGET_SECONDS = 600.0
# Datasets a trainer holds a reference to, the latest (`Trainer._keep`): a few launches at once.
KEPT_DATASETS = 4
# How long a trial waits for its trainer's reports before it looks whether Tune stopped it.
POLL_SECONDS = 0.2
# Calls a trial may make to a trainer at once: its reports (a long poll), a stop, a claim.
CONCURRENCY = 4
# Trials a trainer's training thread trains before it hands over to a new one (`_train_each`).
TRIALS_PER_THREAD = 25


def idle_seconds():
    """The driver's setting of how long its trainers stay unused before they end."""
    value = os.environ.get("LRSWEEP_TRAINER_IDLE_SECONDS", "")
    try:
        seconds = float(value) if value else IDLE_SECONDS
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise LrsweepError(f"Environment variable `LRSWEEP_TRAINER_IDLE_SECONDS` must be a number of seconds > 0. "
                           f"Received: LRSWEEP_TRAINER_IDLE_SECONDS={value!r}")
    return seconds


@functools.cache
def code_key():
    """What a trainer's code depends on: this Python environment (`sys.prefix`: a driver and
    Ray's workers start its Python by different names) and this lrsweep's source. A trainer
    started by another installation (an upgrade, another virtual environment) is not used."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha1(f"{sys.prefix} {sys.version}".encode())
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()[:12]


class _Run:
    """One trial on a trainer: its reports, waiting to be fetched, and whether it must stop."""

    def __init__(self, claimant):
        self.claimant = claimant  # the id of the Tune trial actor that started it
        self.reports = queue.Queue()
        self.proceed = threading.Event()
        self.stopped = False
        self.checked = time.time()
        self.ended = None  # when its training ended

    def must_stop(self, now=False):
        """Whether the trial was stopped, or its Tune actor has died (asked of Ray every
        `CHECK_CLAIMANT_SECONDS`, or `now`): a killed launch must not keep its trainers busy."""
        if not self.stopped and (now or time.time() - self.checked >= CHECK_CLAIMANT_SECONDS):
            self.checked = time.time()
            if not _alive(self.claimant):  # only ever set: a `stop` while Ray answers stands
                self.stopped = True
        return self.stopped


class Trainer:
    """A warm trial worker (see the module's docstring). Its calls run in a few threads, so
    that a trial can fetch its reports and stop its training while it runs."""

    def __init__(self, cpus, idle):
        from lrsweep.run import trial

        trial.warm_up(cpus)
        trial._configure_gpus(None)  # a CPU trainer: TensorFlow must not take a card
        self.idle = idle
        self.ending = False  # a trainer that gave a trial up for its data takes no other
        self.free = threading.Condition()
        self.training = None  # the _Run training now
        self.runs = {}  # token -> _Run, until its last report is fetched
        self.kept, self.kept_for = {}, None
        self.datasets = {}  # hex id -> the reference, the latest last (`_keep`)
        self.last_used = time.time()
        # One thread at a time trains the trials, one after another (`_train_each`)
        self.trials = queue.Queue()
        threading.Thread(target=self._train_each, daemon=True).start()
        threading.Thread(target=self._end_when_idle, daemon=True).start()

    def start(self, token, claimant, config, data, setup, extra, resume=None):
        """Claim this trainer for trial `token` and start training it; False if another
        trial trains here. A training that was stopped, or whose trial has died (a killed
        launch), ends at its next epoch: the claim waits for that. `data` holds the
        reference to the shared arrays, `resume` the trial's checkpoint or None."""
        with self.free:
            if self.ending:
                return False
            if self.training is not None and not self.training.must_stop(now=True):
                return False
            if not self.free.wait_for(lambda: self.training is None or self.ending, timeout=STOPPING_SECONDS):
                return False
            if self.ending:  # it gave the stopped training up for its data meanwhile
                return False
            self._keep(data[0])
            for old in [t for t, run in self.runs.items() if run.ended and time.time() - run.ended > FORGET_SECONDS]:
                del self.runs[old]  # ended, and its trial never came for the rest (it died)
            run = self.training = self.runs[token] = _Run(claimant)
        self.trials.put((run, data[0], config, setup, extra, resume))
        return True

    def _keep(self, dataset):
        """Hold a reference to each of the last few datasets this trainer was handed. A
        launch's trials hand it the same object reference one after another, and Ray's count
        of it here fell to 0 after each trial and rose again with the next: a suspected race in
        Ray's core worker (unconfirmed) can lose, as it does, its note that the object is in the
        object store, and a `ray.get` of it then waits for good, as one did once in CI (the
        trainer now gives up, `trial.shared_arrays`). Held here, the count stays above 0 while
        a launch's trials come. Once the launch's driver has ended, the reference holds
        nothing: the driver owned the object. Called with `self.free` held."""
        self.datasets.pop(dataset.hex(), None)
        self.datasets[dataset.hex()] = dataset
        while len(self.datasets) > KEPT_DATASETS:
            del self.datasets[next(iter(self.datasets))]

    def reports(self, token, timeout):
        """The trial's reports since the last call (waiting up to `timeout` seconds for one),
        ending with None once its training has ended; raises the training's error."""
        run = self.runs.get(token)
        if run is None:
            raise RuntimeError(f"lrsweep trainer: no trial {token} here (stopped, or given up for dead)")
        run.proceed.set()  # the trial has handed its reports to Tune
        out = []
        try:
            out.append(run.reports.get(timeout=timeout))
            while True:
                out.append(run.reports.get_nowait())
        except queue.Empty:
            pass
        if out and (out[-1] is None or isinstance(out[-1], Exception)):
            del self.runs[token]
            if out[-1] is not None:
                raise out[-1]
        return out

    def stop(self, token):
        """Tune stopped the trial: its training ends at the next epoch."""
        run = self.runs.pop(token, None)
        if run is not None:
            run.stopped = True
            run.proceed.set()

    def _train_each(self):
        """Train the next `TRIALS_PER_THREAD` trials on this thread, then go on in a new one.
        Keras keeps its global state per thread: a trial that finds its predecessor's starts
        sooner (300 one-epoch trials of a tiny model in one process: 17.5 s on one thread,
        23.9 s on a thread each). But the thread's native memory grows with each trial it
        trains, by 146 KB (10.8 KB on a thread each), and is freed when the thread ends: with
        a new thread every 25 trials, 2.6 KB per trial in 16.9 s."""
        for _ in range(TRIALS_PER_THREAD):
            self._train(*self.trials.get())
        threading.Thread(target=self._train_each, daemon=True).start()

    def _train(self, run, data, config, setup, extra, resume):
        from lrsweep.run import trial

        def report(result):
            decision = result["epoch"] in setup["decision_epochs"] and result["status"] == "running"
            if decision:  # ASHA may stop the trial here: no further epoch until its trial has
                run.proceed.clear()  # handed the report to Tune (as `tune.report` itself waits)
            run.reports.put(result)
            while decision and not run.proceed.wait(CHECK_CLAIMANT_SECONDS) and not run.must_stop():
                pass

        try:
            arrays = trial.shared_arrays(data, setup["data_seconds"])
            sweep = json.dumps([setup, arrays["x_train"].shape, arrays["num_classes"]], sort_keys=True, default=str)
            if sweep != self.kept_for:  # the models kept for another sweep are of no use to this one
                self.kept, self.kept_for = {}, sweep
                # frozen while kept (`trial.fresh_session`), they are collected only unfrozen:
                # a trainer grew 12-15 MB at each change of sweep
                gc.unfreeze()
            trial.run_trial(config, arrays, setup, report, self.kept, extra, run.must_stop, resume)
            end = None
        except trial.DataLate as e:  # this process is suspect: it ends, and the trial's retry trains elsewhere
            with self.free:
                self.ending = True
            end = RuntimeError(f"lrsweep trainer: {e}; the trainer ends, and a retry of the trial trains on a new one")
        except Exception:  # noqa: BLE001  (the trial fails with it, as if it had trained itself)
            end = RuntimeError(f"the trial failed on its trainer:\n{traceback.format_exc()}")
        with self.free:  # free before the trial hears of the end: its next claim comes at once
            run.ended = self.last_used = time.time()
            self.training = None
            self.free.notify_all()
        run.reports.put(end)
        if self.ending:  # once its trial has the error (or has gone, or was stopped)
            deadline = time.time() + STOPPING_SECONDS
            while run in self.runs.values() and time.time() < deadline:
                time.sleep(POLL_SECONDS)
            _end_this_actor()

    def _end_when_idle(self):
        while True:
            time.sleep(min(self.idle, 30.0))
            with self.free:
                idle = self.training is None and time.time() - self.last_used >= self.idle
            if idle:
                _end_this_actor()
                return


def _end_this_actor():
    """End the actor this code runs in, once its running calls have returned."""
    import ray

    ray.get_runtime_context().current_actor.__ray_terminate__.remote()


def _alive(actor_id):
    """Whether actor `actor_id` (a hex id) is alive or restarting, by Ray's actor table."""
    import ray

    try:
        state = ray._private.state.actors(actor_id).get("State")
    except Exception:  # noqa: BLE001  (no answer: taken as alive, asked again later)
        return True
    return state != "DEAD"


def _actor(node_id, cpus, k, key, idle):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return ray.remote(Trainer).options(
        name=f"trainer-{key}-{node_id[:16]}-cpu{cpus:g}-{k}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=CONCURRENCY, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(cpus, idle)


def slots(have, each):
    """How many trials of `each` of a resource fit in `have` of it, counted as Ray counts
    (in units of 1e-4: 8 CPUs hold 80 trials of 0.1 CPU, where 8 // 0.1 is 79.0)."""
    return int(round(have * 10_000) // round(each * 10_000))


def node_slots(resources, cpus, gpus=0):
    """How many trials of `cpus` CPUs and `gpus` GPUs each a node of `resources` (its
    "Resources" in `ray.nodes()`) runs at once: Ray places a trial on one node."""
    fit = slots(resources.get("CPU", 0), cpus)
    if gpus:
        fit = min(fit, slots(resources.get("GPU", 0), gpus))
    return fit


def warm(cpus, idle):
    """Start the trainers a CPU sweep of `cpus` CPUs per trial will use on each node (one per
    trial slot), without waiting for them: they import TensorFlow while the driver sets up
    Tune. Trainers already there are kept. `idle`: the seconds after which they end unused."""
    import ray

    key = code_key()
    for node in ray.nodes():
        for k in range(node_slots(node.get("Resources", {}), cpus) if node.get("Alive") else 0):
            _actor(node["NodeID"], cpus, k, key, idle)


# The trainer this trial actor used last (Tune reuses the actor for trial after trial).
_last = None
# The trainers a trial looks among on its node, at least: one per trial slot where a node
# has more (a 96-CPU node runs 96 one-CPU trials).
LOOKED_AT = 64


@functools.cache
def _looked_at(node_id, cpus):
    """How many trainers a trial of `cpus` CPUs looks among on node `node_id`: its trial
    slots (its CPUs over `cpus`), `LOOKED_AT` at least. Read once per trial actor."""
    import ray

    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    return max(LOOKED_AT, node_slots(node.get("Resources", {}), cpus))


def stopped():
    """Whether Tune has asked this trial to stop. Tune stops a trial at its next report
    (`ray.tune.report` ends the trial's thread then), and reuses the trial's actor only if
    the thread has ended within 2 s (TUNE_FUNCTION_THREAD_TIMEOUT_S): a trial waiting for
    its trainer's next report, up to 2 s away, must notice the stop itself, or each stopped
    trial costs a new actor. Read from Ray's session (`ray.train._internal.session`)."""
    from ray.train._internal.session import get_session

    session = get_session()
    return session is not None and session.stop_event.is_set()


def train_on_trainer(config, data, setup, extra, report, resume=None):
    """Train a CPU trial on a warm trainer of this node and pass each of its reports to
    `report` (`trial.tune_report`), from its checkpoint `resume` if it has one. `data`
    holds the reference to the shared arrays, `setup` the sweep's training settings and
    the trainers' idle time (`trainer_idle_seconds`: the driver's setting, which the
    trial's process does not see)."""
    global _last
    import ray

    context = ray.get_runtime_context()
    node, claimant, token = context.get_node_id(), context.get_actor_id(), os.urandom(8).hex()
    key, idle = code_key(), setup["trainer_idle_seconds"]

    def candidates():
        if _last is not None:
            yield _last
        for k in range(_looked_at(node, setup["cpus"])):
            yield _actor(node, setup["cpus"], k, key, idle)

    if resume is not None:  # into the object store once, whichever trainer takes it
        resume = ray.put(resume)
    for trainer in candidates():
        try:
            if ray.get(trainer.start.remote(token, claimant, config, data, setup, extra, resume)):
                break
        except ray.exceptions.RayActorError:  # a trainer that ended as it was asked (idle)
            continue
    else:
        raise RuntimeError(f"lrsweep: no free trainer on node {node} among {_looked_at(node, setup['cpus'])}")
    _last = trainer
    ended = False
    try:
        while not ended and not stopped():
            for result in ray.get(trainer.reports.remote(token, POLL_SECONDS)):
                if result is None:
                    ended = True
                else:
                    report(result)
    finally:
        if not ended:
            trainer.stop.remote(token)
