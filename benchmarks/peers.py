"""The tools a user would pick instead of lrsweep, each timed as the whole command a user runs.

Every runner trains the same thing: each of the workload's configs once, the model, fit
arguments and epochs that `plain_trial` gives (no early stopping, so the work is equal).
Each one is a fresh Python process started and timed from outside by `harness.time_child`,
so Python's, TensorFlow's, the tool's and (for Ray) the local cluster's start-up count.
TensorFlow keeps its default threads everywhere, as a user's would.

    plain_loop        one process, the trials one after another
    optuna_threads    Optuna alone: `study.optimize(objective, n_trials, n_jobs=workers)`, TPE
                      sampler, each config enqueued once; the threads share one TensorFlow
    keras_tuner_grid  Keras Tuner's `GridSearch` over `hp.Choice("config", ...)`, one execution
                      per trial, its directory inside the work folder
    ray_tune_default  Ray Tune as its docs show: `Tuner(with_resources(with_parameters(...),
                      {"cpu": 1}))` over `grid_search` of the configs, `tune.report` once per
                      epoch from a small Keras callback, in a local Ray of `workers` CPUs
                      that the command starts and shuts down
    ray_tune_reuse    the same with `TuneConfig(reuse_actors=True)`

Each runner returns:

    seconds            the wall time of the whole command
    startup_seconds    from the command's start to the first trial's start
    configs_run        the config indices trained (checked: each one exactly once)
    best_val_accuracy  the best final-epoch val_accuracy (evidence that the work was done)
    trials             the number of trials

    python -m benchmarks.peers optuna_threads small --quick
"""

import os
import time

from benchmarks import harness


def plain_loop(workload, folder, workers=2, quick=False):
    """One process training the configs one after another (`workers` is not used)."""
    return _run("plain_loop", workload, folder, workers, quick)


def optuna_threads(workload, folder, workers=2, quick=False):
    """Optuna alone, `n_jobs=workers` threads sharing one TensorFlow."""
    return _run("optuna_threads", workload, folder, workers, quick)


def keras_tuner_grid(workload, folder, workers=2, quick=False):
    """Keras Tuner's GridSearch over the configs; it trains one trial at a time (`workers` is
    not used)."""
    return _run("keras_tuner_grid", workload, folder, workers, quick)


def ray_tune_default(workload, folder, workers=2, quick=False):
    """Ray Tune by hand with its defaults (a new actor per trial), `workers` one-CPU trials at once."""
    return _run("ray_tune_default", workload, folder, workers, quick)


def ray_tune_reuse(workload, folder, workers=2, quick=False):
    """Ray Tune by hand with `reuse_actors=True`, `workers` one-CPU trials at once."""
    return _run("ray_tune_reuse", workload, folder, workers, quick)


RUNNERS = {runner.__name__: runner for runner in
           (plain_loop, optuna_threads, keras_tuner_grid, ray_tune_default, ray_tune_reuse)}


def _run(runner, workload, folder, workers, quick):
    if quick:
        workload = harness.quick(workload)
    started = time.time()
    seconds, result = harness.time_child("peers", runner, workload, folder, workers)
    first_trial_at = result.pop("first_trial_at")
    return {"seconds": seconds, "startup_seconds": first_trial_at - started, **result}


def _child(spec_path):
    spec, workload = harness.read_spec(spec_path)
    trials = _CHILDREN[spec["runner"]](spec, workload)  # [(config index, final val_accuracy, start time)]
    configs_run = sorted(index for index, _, _ in trials)
    if configs_run != list(range(len(workload.configs))):
        raise RuntimeError(f"{spec['runner']} trained configs {configs_run}, not each of "
                           f"{len(workload.configs)} once")
    harness.write_result(spec, {
        "first_trial_at": min(started for _, _, started in trials),
        "configs_run": configs_run,
        "best_val_accuracy": max(accuracy for _, accuracy, _ in trials),
        "trials": len(trials),
    })


def _plain_loop(spec, workload):
    import keras

    from benchmarks.workloads import plain_trial

    data = workload.load()
    trials = []
    for index, config in enumerate(workload.configs):
        started = time.time()
        keras.backend.clear_session()
        model, fit = plain_trial(workload, data, config)
        history = model.fit(**fit)
        trials.append((index, float(history.history["val_accuracy"][-1]), started))
    return trials


def _optuna_threads(spec, workload):
    import keras  # noqa: F401  (at the top of a user's script: not in the first trial's time)
    import optuna

    from benchmarks.workloads import plain_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = workload.load()
    indices = list(range(len(workload.configs)))
    trials = []

    def objective(trial):
        started = time.time()
        index = trial.suggest_categorical("config", indices)
        # No clear_session: it would reset the Keras state the other thread is using.
        model, fit = plain_trial(workload, data, workload.configs[index])
        accuracy = float(model.fit(**fit).history["val_accuracy"][-1])
        trials.append((index, accuracy, started))
        return accuracy

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for index in indices:
        study.enqueue_trial({"config": index})
    study.optimize(objective, n_trials=len(indices), n_jobs=spec["workers"])
    return trials


def _keras_tuner_grid(spec, workload):
    import keras_tuner

    from benchmarks.workloads import plain_trial

    data = workload.load()
    indices = list(range(len(workload.configs)))
    starts = {}

    class FixedConfigs(keras_tuner.HyperModel):
        """`hp.Choice("config")` picks one of the fixed configs; its schedule callbacks (which
        differ per config) join the tuner's own in `fit`."""

        def build(self, hp):
            index = hp.Choice("config", indices)
            starts.setdefault(index, time.time())
            model, fit = plain_trial(workload, data, workload.configs[index])
            self.schedule_callbacks = fit["callbacks"]
            return model

        def fit(self, hp, model, *args, callbacks=(), **kwargs):
            return model.fit(*args, callbacks=[*callbacks, *self.schedule_callbacks], **kwargs)

    # The fit arguments are the same for every config but for the schedule's callbacks.
    _, fit = plain_trial(workload, data, workload.configs[0])
    search_args = {name: value for name, value in fit.items() if name != "callbacks"}
    tuner = keras_tuner.GridSearch(FixedConfigs(), objective=keras_tuner.Objective("val_accuracy", "max"),
                                   max_trials=len(indices), executions_per_trial=1, overwrite=True,
                                   directory=os.path.join(spec["work"], "keras_tuner"),
                                   project_name=workload.name)
    # Tuner construction builds the hypermodel once to learn its space: not a trial's start.
    starts.clear()
    tuner.search(**search_args)
    return [(trial.hyperparameters.get("config"), float(trial.metrics.get_last_value("val_accuracy")),
             starts[trial.hyperparameters.get("config")])
            for trial in tuner.oracle.trials.values()]


def _ray_tune(spec, workload, reuse_actors):
    import ray
    from ray import tune

    data = workload.load()
    # "local": always a Ray of this command's own, never one that is already running here.
    ray.init(address="local", num_cpus=spec["workers"])
    try:
        trainable = tune.with_resources(tune.with_parameters(_ray_trial, data=data, workload=workload), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"config": tune.grid_search(list(range(len(workload.configs))))},
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", reuse_actors=reuse_actors),
            run_config=tune.RunConfig(storage_path=os.path.join(spec["work"], "ray_results"), name=spec["runner"]))
        results = tuner.fit()
    finally:
        ray.shutdown()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} Ray Tune trials failed: {results.errors[0]}")
    return [(result.config["config"], result.metrics["val_accuracy"], result.metrics["trial_started"])
            for result in results]


def _ray_trial(config, data, workload):
    """The function trainable: the config's model, `tune.report` at each epoch's end."""
    started = time.time()
    import keras
    from ray import tune

    from benchmarks.workloads import plain_trial

    class ReportEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tune.report({"epoch": epoch + 1, "val_accuracy": float(logs["val_accuracy"]),
                         "val_loss": float(logs["val_loss"]), "trial_started": started})

    keras.backend.clear_session()  # a reused actor drops the previous trial's graphs
    model, fit = plain_trial(workload, data, workload.configs[config["config"]])
    model.fit(**{**fit, "callbacks": [*fit["callbacks"], ReportEpoch()]})


_CHILDREN = {
    "plain_loop": _plain_loop,
    "optuna_threads": _optuna_threads,
    "keras_tuner_grid": _keras_tuner_grid,
    "ray_tune_default": lambda spec, workload: _ray_tune(spec, workload, reuse_actors=False),
    "ray_tune_reuse": lambda spec, workload: _ray_tune(spec, workload, reuse_actors=True),
}


if __name__ == "__main__":
    harness.main(RUNNERS)
