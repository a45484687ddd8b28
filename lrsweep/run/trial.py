"""One trial, on a Ray worker: build the model and the schedule, fit, report every epoch.

Workers never write the results store (they may share no disk with the driver): every
epoch travels back through `ray.tune.report`, and the driver writes it. TensorFlow is
imported here, in the worker, never in the driver.
"""

import contextlib
import gc
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time

from lrsweep.quiet import quiet_stderr, quiet_termination
from lrsweep.results import LOGS
from lrsweep.schedules.registry import OPTIMIZERS


def arm_of(config):
    """(label, optimizer, family, parameters) of a trial config as the search space made it:
    `{"family": "sgd/step", "sgd": {"step": {"initial_lr": 0.1, ...}}}`."""
    label = config["family"]
    optimizer, family = label.split("/")
    return label, optimizer, family, dict(config.get(optimizer, {}).get(family, {}))


def worst_value(metric, mode):
    """The finite value a diverged trial reports: Optuna refuses NaN and ASHA never stops it."""
    if "accuracy" in metric:
        return 0.0 if mode == "max" else 1.0
    return -1e30 if mode == "max" else 1e30


def steps_per_epoch(rows, batch_size):
    return math.ceil(rows / batch_size)


def thread_count(cpus):
    """The threads a trial's TensorFlow and input pipeline use: its CPUs, at least one."""
    return max(1, int(cpus))


_configured = False


def warm_up(cpus=1):
    """Import and configure TensorFlow in this process for trials of `cpus` CPUs, before its
    first trial (a warm trainer does as it starts, `pool.Trainer`). The devices are left
    alone (see `_configure_gpus`)."""
    _configure_tensorflow(cpus)


def _configure_tensorflow(cpus):
    """Once per worker process (actors are reused): the threads must be set before
    TensorFlow's runtime starts. The GPUs are not touched here (see `_configure_gpus`)."""
    global _configured
    if _configured:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr(), _hidden_from_keras():
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # a new shape of model traces again: expected, not news
        threads = thread_count(cpus)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras  # noqa: F401  (Keras' own start-up, while stderr is quiet)
    gc.freeze()  # see fresh_session
    _configured = True


# Keras imports these at its own import when they are installed, for its scikit-learn
# wrappers, its image galleries and `fit` on a DataFrame; a trial uses none of them. scikit-
# learn (with the parts of scipy it loads) and matplotlib.pyplot took 1.2-1.9 s of the
# 8.4-9.5 s a trial worker's imports took (this machine): the first epoch of a cold `launch`
# came about 3 s sooner. pandas (with pyarrow) took about 0.5 s more of a 5-6 s start.
KERAS_EXTRAS = ("sklearn", "matplotlib", "pandas")


@contextlib.contextmanager
def _hidden_from_keras(names=KERAS_EXTRAS):
    """While TensorFlow and Keras import, their `try: import sklearn` finds nothing (a None in
    `sys.modules` makes an import fail), so Keras sets those extras aside. Afterwards the
    modules import as usual: only Keras' wrappers and galleries stay off in this process.
    A module already imported is left alone."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]


_gpus_configured = False


def _configure_gpus(gpu_ids):
    """Once per process: in a GPU trial's Tune actor, at its first trial, where Ray has set
    CUDA_VISIBLE_DEVICES to the cards it gave the actor (`gpu_ids`; TensorFlow reads the
    variable once, when it first lists its devices, so never in a warm-up); in a warm
    trainer (`pool`), which trains CPU trials only, as it starts.
    A GPU trial's memory grows as it needs, so that trials holding a fraction of a card
    share it. A CPU trial hides the node's cards from TensorFlow, which would otherwise put
    its model on the first of them: Ray leaves CUDA_VISIBLE_DEVICES unset for an actor that
    asked for no GPU."""
    global _gpus_configured
    if _gpus_configured:
        return
    import tensorflow as tf

    with quiet_stderr():  # without a GPU, CUDA's start-up error line
        cards = tf.config.list_physical_devices("GPU")
    if gpu_ids:
        for card in cards:
            tf.config.experimental.set_memory_growth(card, True)
        if not cards:
            print(f"lrsweep: warning: this trial was given GPU {gpu_ids} but TensorFlow sees none and trains on "
                  "the CPU (is tensorflow[and-cuda] installed on this node?)", file=sys.stderr)
    else:
        tf.config.set_visible_devices([], "GPU")
    _gpus_configured = True


def fresh_session(keras, clear=True):
    """Start a trial in a reused actor. `clear`: drop the previous trial's graphs
    (`clear_session`, which also empties TensorFlow's kernel cache), for a trial that
    compiles a model of its own; a trial on a kept model (`compiled`) keeps them, and the
    kernels its compiled functions were instantiated with. Either way the previous trial's
    garbage is collected, then what survives is frozen (`gc.freeze`): the Python heap of a
    TensorFlow process is hundreds of thousands of objects made at import; frozen, they are
    no longer walked by this collection or by the automatic ones during training. A digits
    trial's set-up fell from 0.3-0.4 s of collecting to about 0.01 s."""
    if clear:
        _drop_custom_gradients()
        keras.backend.clear_session(free_memory=False)
    gc.collect()
    gc.freeze()


def seed_trial(seed):
    """What `keras.utils.set_random_seed` seeds but TensorFlow's global seed: Python's and
    NumPy's generators, and Keras' own (initial weights, dropout). Setting TensorFlow's
    global seed empties its kernel cache (`tf.random.set_seed`), and with it the training
    and evaluation functions of a kept model, instantiated again at its next call: about
    0.15 s of a small trial's first epoch. No part of a trial reads that seed: its shuffle
    has a seed of its own (`batches`), and Keras' random ops take theirs from Keras."""
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)  # made again from `random`
    random.seed(seed)
    np.random.seed(seed)


_builtin_gradients = None


def _drop_custom_gradients():
    """Keras' TensorFlow optimizer sums gradients through the replica context's
    `all_reduce`, a `tf.custom_gradient`: each trace registers its gradient function in
    TensorFlow's global gradient registry as `CustomGradient-N`, where it keeps the whole
    traced graph alive after `clear_session` (tensorflow/tensorflow#97697; tf-keras #898
    purges them the same way). Two per trial: a reused actor grew 1.7 MB per trial. The
    previous trial's graphs are gone by the time the next one starts, so are the gradients
    registered for them; entries that were there before the first trial stay."""
    global _builtin_gradients
    from tensorflow.python.framework import ops

    entries = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(entries, dict):
        return
    if _builtin_gradients is None:
        _builtin_gradients = set(entries)
        return
    for name in [n for n in entries if n.startswith("CustomGradient-") and n not in _builtin_gradients]:
        del entries[name]


def batches(x, y, batch_size, *, shuffle, seed, threads, repeat=False, skip_epochs=0):
    """A tf.data pipeline that copies one batch at a time out of the shared arrays.

    The arrays come zero-copy from Ray's object store, and every trial on a node shares
    them; given the arrays themselves, Keras would copy the whole dataset into each
    trial's TensorFlow. Batches are prefetched, so training does not wait for them.
    `repeat`: one endless stream of epochs (each shuffled anew), to be read with a number of
    steps per epoch; `skip_epochs`: the stream starts at that epoch's order, as a trial
    resumed from a checkpoint (only the row numbers of the epochs skipped are shuffled,
    no row is read).
    """
    import tensorflow as tf

    def take(rows):
        return x[rows], y[rows]

    _made.readers.append(take)
    rows = tf.data.Dataset.range(len(x))
    if shuffle:
        rows = rows.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    rows = rows.batch(batch_size)
    if repeat:
        rows = rows.repeat().skip(skip_epochs * steps_per_epoch(len(x), batch_size))
    data = rows.map(lambda r: tf.numpy_function(take, [r], (tf.float32, tf.int64), stateful=False))
    data = data.map(lambda a, b: (tf.ensure_shape(a, (None, *x.shape[1:])), tf.ensure_shape(b, (None,))))
    return data.prefetch(2).with_options(pipeline_options(threads))


def pipeline_options(threads):
    """The tf.data options of a trial's input pipelines: `threads` threads of their own (a
    one-CPU trial stays on one CPU), and no autotuning, which has nothing to tune here (the
    maps run in order, the prefetch buffer is fixed) and held up the end of trials: each
    iterator starts a thread that tunes it now and then, sleeping between tunings for a
    period that doubles up to 60 s, and deleting the iterator (Keras drops the training
    stream as `fit` returns) sometimes waited for that sleep to end. Of 60 trials of 200
    short epochs (3 per launch, 2 CPUs), 10 ended 3-10 s after their last epoch, so Tune
    heard of the end (and the store, and the next trial's start) that much later; none of
    42 with autotuning off. An epoch of the digits MLP also took 74 ms where it took 81."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.autotune.enabled = False
    return options


class _Made(threading.local):
    """The readers `batches` made on a thread, until its trial ends (`release_readers`)."""

    def __init__(self):
        self.readers = []


_made = _Made()


def release_readers():
    """Let go of the input pipelines' readers that this thread's trial made (`batches`), and
    with them of the dataset's arrays, once it has ended. `tf.numpy_function` keeps the
    function it calls alive as long as the outermost graph of its caller: for tf.data's map
    functions in eager mode, the thread's default graph, which lives until `clear_session`
    replaces it, which a trial on a kept model does not call, or the thread ends (a trainer's
    training thread trains 25 trials, `pool.TRIALS_PER_THREAD`). A trainer serving one
    launch after another on a running cluster kept each of those launches' datasets in the
    object store (5 launches of one sweep: 5 copies). TensorFlow holds each function in
    that graph's list of them, and ties the wrapper it lists to the function as
    `ag_dnc_wrapper__` (`script_ops._internal_py_func`): the readers' wrappers leave the
    list, nothing else. Call it on the thread that made them."""
    from tensorflow.python.framework import ops

    made, _made.readers = _made.readers, []
    wrappers = {id(w) for w in (getattr(take, "ag_dnc_wrapper__", None) for take in made) if w is not None}
    listed = getattr(ops.get_default_graph(), "_py_funcs_used_in_graph", None)
    if listed is not None:
        listed[:] = [f for f in listed if id(f) not in wrappers]
    for take in made:  # the wrapper holds the reader: without the way back, both go at once
        take.__dict__.pop("ag_dnc_wrapper__", None)


# A validation set up to this size is copied into each trial's TensorFlow (see `input_pipelines`).
VALIDATION_COPY_BYTES = 16 * 2**20


def input_pipelines(data, batch_size, *, seed, threads, skip_epochs=0):
    """`model.fit`'s input arguments for a trial on `data`'s arrays.

    tf.data takes about 10 ms to start a pipeline that reads the shared arrays (it sets up
    its functions anew for each iterator), and Keras starts one or two for every epoch and
    every validation: most of a small model's epoch. So the training batches are one endless
    stream, read `steps_per_epoch` at a time (its iterator made once per trial), and a
    validation set of at most `VALIDATION_COPY_BYTES` is copied into the trial, whose
    pipeline starts in 1-2 ms; a larger one is read from the shared arrays, where its
    evaluation outweighs the start. Either way Keras evaluates every validation row once
    per epoch, in order (`validation_steps`). `skip_epochs`: the training stream starts with
    the batches of the epoch after those (`batches`).
    """
    import tensorflow as tf

    x, y, x_val, y_val = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    if x_val.nbytes + y_val.nbytes <= VALIDATION_COPY_BYTES:
        validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size).with_options(
            pipeline_options(threads))
    else:
        validation = batches(x_val, y_val, batch_size, shuffle=False, seed=seed, threads=threads)
    return dict(x=batches(x, y, batch_size, shuffle=True, seed=seed, threads=threads, repeat=True,
                          skip_epochs=skip_epochs),
                steps_per_epoch=steps_per_epoch(len(x), batch_size), validation_data=validation,
                validation_steps=steps_per_epoch(len(x_val), batch_size))


# A trial reports at least this often: each report waits for the driver's answer (a round
# trip of 10-15 ms), a large share of a small model's epoch.
REPORT_SECONDS = 2.0


# A checkpoint's files: Keras' weights file of the model, which holds the optimizer's state
# too (step count, momenta, rate), and the rest of the trial's state.
WEIGHTS, STATE = "model.weights.h5", "state.json"
# What a checkpoint keeps of a schedule's Keras callbacks (ReduceLROnPlateau's counters).
CALLBACK_STATE = ("wait", "cooldown_counter", "best")


def _seed_states(model):
    """The states of the model's random generators (its dropout layers'): variables of the
    model that Keras' weights file leaves out."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def save_checkpoint(model, callbacks, epoch, trial_start):
    """A trial's state at the end of `epoch` as plain data, for its report: the weights file's
    bytes, the epoch, the trial's first start, its dropout layers' generator states (so the
    next epochs drop the units they would have), its schedule's callbacks' counters."""
    with tempfile.TemporaryDirectory(prefix="lrsweep-") as folder:
        path = os.path.join(folder, WEIGHTS)
        model.save_weights(path)
        with open(path, "rb") as f:
            weights = f.read()
    counters = [{name: getattr(c, name) for name in CALLBACK_STATE if hasattr(c, name)} for c in callbacks]
    return {"weights": weights, "epoch": epoch, "trial_start": trial_start, "callbacks": counters,
            "seeds": [v.numpy().tolist() for v in _seed_states(model)]}


def restore_model(model, checkpoint):
    """The weights and the optimizer's state of `checkpoint` into `model` (compiled, of the
    same shape): its next step is the step after the checkpoint's epoch."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    with tempfile.TemporaryDirectory(prefix="lrsweep-") as folder:
        path = os.path.join(folder, WEIGHTS)
        with open(path, "wb") as f:
            f.write(checkpoint["weights"])
        model.load_weights(path)
    if "seeds" in checkpoint:  # a checkpoint saved before they were: the rest still serves
        for variable, value in zip(_seed_states(model), checkpoint["seeds"], strict=True):
            variable.assign(value)


def restore_callbacks(callbacks, checkpoint):
    for callback, counters in zip(callbacks, checkpoint["callbacks"]):
        for name, value in counters.items():
            setattr(callback, name, value)


_warned_storage = False


def tune_report(result):
    """`ray.tune.report` of a trial's report; the checkpoint it may carry becomes a Tune
    checkpoint (a folder with `WEIGHTS` and `STATE`), which Tune copies into the sweep's
    storage before it returns. Where this trial cannot reach that storage
    (`checkpoints_reach_storage`) the checkpoint is left out, with a warning once per
    process: Ray would fail the trial."""
    global _warned_storage
    from ray import tune

    checkpoint = result.pop("checkpoint", None)
    if checkpoint is not None and not checkpoints_reach_storage():
        if not _warned_storage:
            print(f"lrsweep: warning: trial {tune.get_context().get_trial_id()} cannot reach the sweep's storage (a "
                  f"folder on the driver's machine) and saves no checkpoint: set `storage` to a folder every node "
                  f"shares, or s3://... / gs://...", file=sys.stderr)
            _warned_storage = True
        checkpoint = None
    if checkpoint is None:
        tune.report(result)
        return
    # Ray's line for each checkpoint it stores ("Checkpoint successfully created at: ..."):
    # the trial's Tune folder holds them
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="lrsweep-checkpoint-") as folder:
        with open(os.path.join(folder, WEIGHTS), "wb") as f:
            f.write(checkpoint["weights"])
        with open(os.path.join(folder, STATE), "w") as f:
            json.dump({k: v for k, v in checkpoint.items() if k != "weights"}, f)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))


def tune_checkpoint():
    """The checkpoint Tune gives this trial (a retry after a failure, or a trial `--resume`
    continues), as `save_checkpoint` made it; None for a trial's first start, and for one
    whose checkpoint cannot be read (it starts again, with a warning)."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    try:
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, STATE)) as f:
                state = json.load(f)
            with open(os.path.join(folder, WEIGHTS), "rb") as f:
                return {**state, "weights": f.read()}
    except (OSError, ValueError) as e:  # deleted or damaged: the trial starts again
        _restarted(checkpoint.path, e)
        return None


def _restarted(where, error):
    print(f"lrsweep: warning: the trial's checkpoint {where} could not be read ({type(error).__name__}: "
          f"{str(error).splitlines()[0] if str(error) else ''}); it trains again from its first epoch", file=sys.stderr)


def checkpoints_reach_storage():
    """Whether this trial can save checkpoints where Tune keeps them: Ray refuses a
    checkpoint of a trial on another machine than the driver's when the sweep's storage is
    a local folder (it looks for a marker file the driver wrote there)."""
    from ray.train._internal.session import get_session

    session = get_session()
    try:
        session.storage._check_validation_file()
    except RuntimeError:
        return False
    except Exception:  # noqa: BLE001  (another Ray: its own check comes with the first checkpoint)
        pass
    return True


def make_callback_class(keras):
    from lrsweep.run.compiled import RateTable

    class EpochReporter(keras.callbacks.Callback):
        """Reports epochs to Tune: the rate in effect (read when the epoch begins: at its
        end a schedule already gives the next epoch's rate), the logs, the time taken; a
        non-finite loss ends the trial as `diverged`.

        A report carries every epoch since the last one (`rows`) and the latest epoch's
        values at its top, for Tune's scheduler and searcher. It is sent at each epoch where
        the scheduler may stop the trial (`decisions`, ASHA's rungs), at the last epoch,
        and otherwise once `REPORT_SECONDS` have passed. Every
        `checkpoint_seconds` (None: never) a report also carries the trial's checkpoint
        (`save_checkpoint`); a trial resumed from one (`resume`) gets its schedule's
        callbacks' counters back as training begins.
        """

        def __init__(self, report, metric, mode, decisions, max_epochs, extra, stopped=None, *,
                     checkpoint_seconds=None, schedule_callbacks=(), resume=None):
            super().__init__()
            self.report, self.metric, self.mode, self.extra, self.stopped = report, metric, mode, extra, stopped
            self.decisions, self.max_epochs = set(decisions), max_epochs
            self.rows, self.last_report = [], time.time()
            self.checkpoint_seconds, self.last_checkpoint = checkpoint_seconds, time.time()
            self.schedule_callbacks, self.resume = schedule_callbacks, resume

        def on_train_begin(self, logs=None):
            # after the schedule's callbacks have set themselves up (ReduceLROnPlateau resets
            # its counters as training begins): a resumed trial's counters come back
            if self.resume is not None:
                restore_callbacks(self.schedule_callbacks, self.resume)

        def on_epoch_begin(self, epoch, logs=None):
            optimizer = self.model.optimizer
            schedule = getattr(optimizer, "_learning_rate", None)  # Keras keeps the schedule there
            if isinstance(schedule, RateTable):
                self.lr = schedule.rate_at(keras.ops.convert_to_numpy(optimizer.iterations))
            else:
                self.lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {name: float(logs[name]) if name in logs else math.nan for name in LOGS}
            diverged = not all(math.isfinite(row[name]) for name in ("loss", "val_loss"))
            if diverged:
                self.model.stop_training = True
            now = time.time()
            row.update(epoch=epoch + 1, lr=self.lr, seconds=now - self.started, time=now,
                       status="diverged" if diverged else "running")
            self.rows.append(row)
            # a checkpoint at an epoch's end, every `checkpoint_seconds`: never at the last epoch
            # (nothing is left to resume), nor at a diverged one
            checkpoint = (self.checkpoint_seconds is not None and not diverged and epoch + 1 < self.max_epochs
                          and now - self.last_checkpoint >= self.checkpoint_seconds)
            if (diverged or checkpoint or epoch + 1 in self.decisions or epoch + 1 == self.max_epochs
                    or now - self.last_report >= REPORT_SECONDS):
                rows, self.rows = self.rows, []
                # Tune keeps running statistics of every number at a report's top level, in
                # each trial's saved state: only what its scheduler and searcher read is there.
                # the history keeps what Keras measured; Tune gets a finite worst value for a
                # diverged epoch (Optuna refuses NaN, and ASHA never stops a trial on it)
                reported = worst_value(self.metric, self.mode) if diverged else row[self.metric]
                result = {self.metric: reported, "epoch": row["epoch"], "status": row["status"], "rows": rows,
                          **self.extra}
                if checkpoint:
                    result["checkpoint"] = save_checkpoint(self.model, self.schedule_callbacks, row["epoch"],
                                                           self.extra["trial_start"])
                    self.last_checkpoint = time.time()
                self.report(result)
                self.last_report = time.time()
            if self.stopped is not None and self.stopped():
                self.model.stop_training = True

    return EpochReporter


def make_optimizer(keras, name, learning_rate, setup):
    """The Keras optimizer `name` at `learning_rate`: with the sweep's `optimizer_args` if it
    is the sweep's own optimizer, with Keras' defaults otherwise (an `adam/...` family of an
    SGD sweep)."""
    args = setup["optimizer_args"] if name == setup["optimizer"] else {}
    return getattr(keras.optimizers, OPTIMIZERS[name])(learning_rate=learning_rate, **args)


def build_trial(config, data, setup, kept=None, from_epoch=0):
    """One trial's Keras side, exactly as `train` runs it: the seeded weights and shuffle,
    the schedule, the optimizer, the compiled model and the input pipelines. Returns
    (model, `model.fit` keyword arguments, steps per epoch). `data` holds the dataset's
    arrays, `setup` the sweep's training settings (`driver.training_setup`). `kept` is a
    dict a trial worker keeps between its trials: a model compiled for an earlier trial of
    the same shape is trained again from this trial's initial state (`compiled`).
    `from_epoch`: the epochs a checkpoint already trained; the training batches start
    with the next epoch's, as the uninterrupted trial read them."""
    import keras

    from lrsweep.models import build_model, loss_for
    from lrsweep.run.compiled import kept_key, trial_model
    from lrsweep.schedules.registry import build_schedule

    _, optimizer_name, family, params = arm_of(config)
    seed = config.get("seed", setup["seed"])
    x = data["x_train"]
    spe = steps_per_epoch(len(x), setup["batch_size"])
    # early_stopping="budget": a rung's trial trains `budget` epochs, the schedule fitted to them
    budget = config.get("budget", setup["max_epochs"])
    schedule, callbacks = build_schedule(family, params, steps_per_epoch=spe, epochs=setup["max_epochs"],
                                         granularity=setup["granularity"], over=budget)
    # What the compiled model depends on besides the rate: a kept one serves any trial of it.
    shape = json.dumps([setup["model"], setup["model_args"], x.shape[1:], data["num_classes"], optimizer_name,
                        setup["optimizer"], setup["optimizer_args"], spe], sort_keys=True, default=str)
    steps = setup["max_epochs"] * spe
    fresh_session(keras, clear=kept is None or kept_key(shape, schedule, steps) not in kept)
    seed_trial(seed)  # weights, dropout
    model = build_model(setup["model"], setup["model_args"], x.shape[1:], data["num_classes"])

    def compile_model(model, learning_rate):
        # One compiled call per epoch: a small model's step is mostly Python overhead otherwise
        # (25-35% of the epoch on the benchmarks' MLPs); callbacks here work on epochs only.
        model.compile(optimizer=make_optimizer(keras, optimizer_name, learning_rate, setup),
                      loss=loss_for(data["num_classes"]), metrics=["accuracy"], steps_per_execution=spe)

    model = trial_model(kept, shape, model, schedule, steps, compile_model)
    fit = dict(input_pipelines(data, setup["batch_size"], seed=seed, threads=thread_count(setup["cpus"]),
                               skip_epochs=from_epoch),
               epochs=budget, shuffle=False, verbose=0, callbacks=callbacks)
    return model, fit, spe


# How long a trial waits for the dataset's arrays from the object store before it fails
# (`shared_arrays`): two minutes, and a second more for every 10 MB of them (a slow network's
# speed: a 6 GB dataset gets 12 minutes).
DATA_SECONDS, DATA_BYTES_PER_SECOND = 120.0, 10e6


def data_seconds(arrays):
    """How long a trial may wait for `arrays` from the object store (`shared_arrays`)."""
    size = sum(getattr(value, "nbytes", 0) for value in arrays.values())
    return DATA_SECONDS + size / DATA_BYTES_PER_SECOND


class DataLate(RuntimeError):
    """The dataset's arrays did not come from the object store in time (`shared_arrays`)."""


def shared_arrays(reference, seconds):
    """The dataset's arrays, from the object store. Seen once in CI, on a resumed launch: a
    trainer's `ray.get` of them waited for good, and the launch with it (`pool.Trainer._keep`
    has a guess at why); after `seconds` (`data_seconds`, the driver's) the trial fails
    instead (DataLate), and Tune trains it again (`max_failures`)."""
    import ray

    try:
        return ray.get(reference, timeout=seconds)
    except ray.exceptions.GetTimeoutError:
        raise DataLate(f"the dataset's arrays did not come from Ray's object store in {seconds:g} s") from None


# The compiled model a trial worker keeps for its next trial (`build_trial`).
_kept = {}


def run_trial(config, data, setup, report, kept=None, extra=None, stopped=None, resume=None):
    """Train one trial in this process, its TensorFlow configured (`warm_up`), and pass its
    reports to `report`: `data` holds the dataset's arrays, `setup` the sweep's training
    settings, `kept` the compiled models this process keeps between trials (`build_trial`),
    `extra` what every report carries besides, `stopped()` whether the trial has been
    stopped from outside (checked at each epoch's end). `resume`: the trial's checkpoint
    (`tune_checkpoint`), from whose epoch it goes on; its reports keep the first start."""
    try:
        _run_trial(config, data, setup, report, kept, extra, stopped, resume)
    finally:
        release_readers()


def _run_trial(config, data, setup, report, kept, extra, stopped, resume):
    import keras

    started = time.time()
    model, fit, spe = build_trial(config, data, setup, kept=kept, from_epoch=resume["epoch"] if resume else 0)
    if resume is not None:
        try:
            restore_model(model, resume)
        except Exception as e:  # noqa: BLE001  (a damaged weights file: the trial starts again)
            _restarted(f"of epoch {resume['epoch']}", e)
            resume = None
            model, fit, spe = build_trial(config, data, setup, kept=kept)  # the initial state again
        else:
            started, fit["initial_epoch"] = resume["trial_start"], resume["epoch"]
    extra = {**(extra or {}), "trial_start": started, "steps_per_epoch": spe,
             "resumed_from": resume and resume["epoch"]}
    reporter = make_callback_class(keras)(report, setup["metric"], setup["mode"], setup["decision_epochs"],
                                          fit["epochs"], extra, stopped,
                                          checkpoint_seconds=setup["checkpoint_seconds"],
                                          schedule_callbacks=fit["callbacks"], resume=resume)
    model.fit(**{**fit, "callbacks": [*fit["callbacks"], reporter]})


def train(config, *, data, setup):
    """Ray Tune trainable: `data` holds the reference to the dataset's arrays in the object
    store (shared by the trials of a node), `setup` the sweep's training settings. A CPU
    trial trains on a warm trainer of its node (`pool`); a trial given GPUs trains here,
    where Ray has set the cards it may use; either goes on from the trial's checkpoint, if
    Tune gives it one."""
    import ray

    quiet_termination()
    gpu_ids = ",".join(str(g) for g in ray.get_gpu_ids()) or None
    extra = {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": gpu_ids}
    resume = tune_checkpoint()
    if gpu_ids is None:
        from lrsweep.run.pool import train_on_trainer

        train_on_trainer(config, data, setup, extra, tune_report, resume)
        return
    _configure_tensorflow(setup["cpus"])
    _configure_gpus(gpu_ids)
    run_trial(config, shared_arrays(data[0], setup["data_seconds"]), setup, tune_report, _kept, extra, resume=resume)
