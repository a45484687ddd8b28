"""`lrsweep.Sweep` and sweep files: every bad field is one line naming the field and the
value; the search space, sampled by a real Optuna TPE study, stays inside each family's
ranges and never mixes families."""

import json
import pathlib
import pickle
import sys

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from ray.tune.experiment import Trial
from ray.tune.search import Searcher

from lrsweep import FAMILIES, Choice, LrsweepError, Range, Sweep
from lrsweep.run.search import FixedConfigs, scheduler, search_algorithm
from lrsweep.schedules.registry import check_schedule
from lrsweep.sweep.space import SearchSpace, trial_config
from lrsweep.sweep.spec import NAME_LENGTH, RUN_TIME_LENGTH, load_sweep
from tests.conftest import lrsweep

STEP = {"step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": Range(0.1, 0.9), "epochs_drop": Range(2, 8)}}
GOOD = {"name": "s", "families": STEP, "max_epochs": 20}


@pytest.mark.parametrize("fields, named", [
    ({"name": "my sweep"}, ["name='my sweep'"]),
    ({"max_epochs": 0}, ["max_epochs=0"]),
    ({"num_samples": -3}, ["num_samples=-3"]),
    ({"batch_size": 0}, ["batch_size=0"]),
    ({"families": {"stepp": {"initial_lr": 0.1}}}, ["families", "'stepp'"]),
    ({"families": {"step": {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 2, "dropp": 0.3}}},
     ["families['step']", "`dropp`"]),
    ({"families": {"step": {"initial_lr": 0.1, "drop": Range(0.5, 1.5), "epochs_drop": 2}}}, ["drop=1.5"]),
    ({"families": {"step": {"initial_lr": Range(0, 0.1, log=True), "drop": 0.5, "epochs_drop": 2}}},
     ["initial_lr=0"]),
    ({"families": {"polynomial": {"initial_lr": 0.1, "power": 1.0, "end_lr": Range(0, 0.01, log=True)}}},
     ["log", "end_lr=0..0.01"]),
    ({"families": {"step": {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": Range(2.5, 10)}}},
     ["epochs_drop", "2.5"]),
    ({"families": {"cyclical": {"base_lr": Range(0.01, 0.2), "max_lr": Range(0.1, 1.0), "step_size": 2}}},
     ["base_lr=0.2", "max_lr=0.1", "could draw from base_lr=0.01..0.2, max_lr=0.1..1"]),
    ({"families": {"cosine": {"initial_lr": 0.1, "warmup_epochs": Choice(0, 5, 20)}}}, ["warmup_epochs=20"]),
    # gamma acts in mode exp_range only: 20 trials of one schedule
    ({"families": {"cyclical": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "mode": "triangular",
                                "gamma": Range(0.9, 0.99)}}}, ["gamma=0.9..0.99", "mode='triangular'", "exp_range"]),
    ({"families": {"cyclical": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "gamma": Choice(0.5, 0.9)}}},
     ["gamma={0.5, 0.9}", "mode='triangular'"]),
    # a run's default name adds its start time (NAME-20261207-101500): folders hold it and more
    ({"name": "a" * 113}, ["name", "at most 112", "start time", "a" * 113]),
    ({"families": {"adamw/step": {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 2}}}, ["optimizer", "'adamw'"]),
    ({"optimizer": "adamw"}, ["optimizer='adamw'"]),
    ({"families": {"adam": {"initial_lr": 0.001}, "adam/constant": {"initial_lr": 0.01}}}, ["'adam/constant'"]),
    ({"metric": "f1"}, ["metric='f1'"]),
    ({"early_stopping": "hyperband"}, ["early_stopping='hyperband'"]),
    ({"configs": [{"family": "constant", "initial_lr": 0.1}]}, ["families=", "configs=[{'family': 'constant'"]),
    ({"families": None}, ["families=None", "configs=None"]),
    ({"families": None, "configs": [{"family": "constant", "initial_lr": Range(0.01, 0.1)}]},
     ["configs[0]", "Range(low=0.01"]),
    ({"resources": {"cpu": 1, "tpu": 1}}, ["resources", "'tpu'"]),
    ({"optimizer_args": {"momentum": 1.5}}, ["optimizer_args['momentum']=1.5"]),
    ({"optimizer_args": {"nesterov": "yes"}}, ["optimizer_args['nesterov']='yes'"]),
    ({"model_args": {"activation": "relux"}}, ["activation='relux'"]),
    ({"checkpoint_seconds": 0}, ["checkpoint_seconds=0", "None"]),
    ({"checkpoint_seconds": "60"}, ["checkpoint_seconds='60'"]),
    ({"data_dir": 123}, ["data_dir=123"]),
    ({"storage": ""}, ["storage=''"]),
    ({"reduction_factor": 1.0000000001}, ["reduction_factor=1.0000000001", "no more rungs than epochs"]),
    ({"seed": 2**32 - 3}, ["seed=4294967293", "seed + 5"]),
    ({"optimizer": "adam", "optimizer_args": {"momentum": 0.9}}, ["optimizer='adam'", "optimizer_args={'momentum': 0.9}"]),
], ids=["name", "max_epochs", "num_samples", "batch_size", "unknown-family", "unknown-param", "range-out-of-bounds",
        "log-range-low-0", "log-range-low-0-allowed-param", "int-param-float-range", "base-lr-overlaps-max-lr",
        "warmup-reaches-max-epochs", "gamma-searched-without-exp-range", "gamma-chosen-without-exp-range",
        "name-too-long",
        "unknown-optimizer-in-key", "unknown-optimizer", "family-twice", "metric",
        "early-stopping", "families-and-configs", "neither", "configs-with-range", "resources-tpu", "momentum",
        "nesterov", "activation", "checkpoint-seconds-0", "checkpoint-seconds-text", "data-dir-number",
        "storage-empty", "reduction-factor-near-1", "seed-beyond-numpys", "optimizer-args-of-adam"])
def test_a_bad_field_is_one_line_naming_the_field_and_the_value(fields, named):
    if "gamma" in str(fields):  # where exp_range may be drawn, gamma acts: the same space is good then
        cyclical = fields["families"]["cyclical"]
        Sweep(**{**GOOD, "families": {"cyclical": {**cyclical, "mode": Choice("triangular", "exp_range")}}})
        # a fixed gamma trains one schedule, as the search drew it for a triangular trial: a config of it is good
        Sweep(**{**GOOD, "families": None, "configs": [{"family": "cyclical", "base_lr": 0.01, "max_lr": 0.1,
                                                        "step_size": 2, "mode": "triangular", "gamma": 0.93}]})
    if len(fields.get("name", "")) > NAME_LENGTH - RUN_TIME_LENGTH:  # one letter shorter: good
        Sweep(**{**GOOD, "name": fields["name"][:-1]})
    with pytest.raises(LrsweepError) as caught:
        Sweep(**{**GOOD, **fields})
    message = str(caught.value)
    assert "\n" not in message
    for text in named:
        assert text in message


@pytest.mark.parametrize("settings, plan", [
    # ASHA's rungs 1, 3, 9, 27 below 50 epochs; a third goes on each time, a lone trial straight to the end
    ({"max_epochs": 50, "num_samples": 40}, [(1, 40), (3, 13), (9, 4), (50, 1)]),
    # no rung of 16 epochs before 20: the last rung before max_epochs is at most a reduction_factor shorter
    ({"max_epochs": 20, "num_samples": 30, "grace_period": 2, "reduction_factor": 2},
     [(2, 30), (4, 15), (8, 7), (20, 3)]),
    ({"max_epochs": 30, "num_samples": 40, "grace_period": 3}, [(3, 40), (9, 13), (30, 4)]),
    ({"max_epochs": 5, "num_samples": 1}, [(5, 1)]),
    ({"max_epochs": 3, "num_samples": 9, "grace_period": 4}, [(3, 9)]),  # the grace period is the whole budget
])
def test_budget_rungs_are_successive_halving_up_to_max_epochs(settings, plan):
    assert Sweep(**{**GOOD, **settings}, early_stopping="budget").budgets == plan


@pytest.mark.parametrize("key, optimizer, label", [
    ("step", "sgd", "sgd/step"),
    ("step", "rmsprop", "rmsprop/step"),
    ("adam", "sgd", "adam/constant"),
    ("rmsprop", "sgd", "rmsprop/constant"),
    ("adam/step", "sgd", "adam/step"),
])
def test_a_family_key_names_its_ranking_row(key, optimizer, label):
    space = {"initial_lr": 0.1} if label.endswith("constant") else STEP["step"]
    arm = Sweep(name="s", families={key: space}, optimizer=optimizer).arms[label]
    assert (arm.optimizer, arm.family) == tuple(label.split("/"))


@pytest.mark.parametrize("metric, mode", [("val_accuracy", "max"), ("accuracy", "max"), ("val_loss", "min"),
                                          ("loss", "min")])
def test_mode_follows_the_metric_unless_given(metric, mode):
    assert Sweep(**GOOD, metric=metric).mode == mode
    assert Sweep(**GOOD, metric=metric, mode="min").mode == "min"


def test_parameters_not_given_take_the_family_defaults_and_validate_names_them(tmp_path):
    path = tmp_path / "cyclical.py"
    path.write_text("from lrsweep import Range, Sweep\nSWEEP = Sweep(name='s', families={'cyclical': "
                    "{'base_lr': 0.01, 'max_lr': Range(0.05, 0.5), 'step_size': 2}})\n")
    arm, = load_sweep(str(path)).arms.values()
    assert check_schedule(arm.family, {**arm.space, "max_lr": 0.1}, 20) == {
        "base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "mode": "triangular", "gamma": 1.0}
    done = lrsweep("validate", str(path))
    assert done.returncode == 0, done.stderr
    assert "(defaults: mode=triangular, gamma=1.0)" in done.stdout


def test_a_reduction_factor_below_2_makes_its_rungs_and_paths_are_taken_as_strings():
    """Ray's ASHA takes any factor above 1 (one that makes more rungs than epochs is refused
    above); a pathlib.Path is a folder as well as a string is."""
    sweep = Sweep(**{**GOOD, "reduction_factor": 1.5, "storage": pathlib.Path("/tmp/tune"),
                     "data_dir": pathlib.Path("tests/data")})
    assert sweep.rungs == [1, 2, 3, 4, 6, 8, 12, 18]
    assert (sweep.storage, sweep.data_dir) == ("/tmp/tune", "tests/data")


def test_with_overrides_checks_again():
    with pytest.raises(LrsweepError, match="max_epochs=0"):
        Sweep(**GOOD).with_overrides(max_epochs=0)
    fixed = Sweep(name="s", families={"cosine": {"initial_lr": 0.1, "warmup_epochs": 5}}, max_epochs=20)
    with pytest.raises(LrsweepError, match="warmup_epochs=5"):
        fixed.with_overrides(max_epochs=5)


@pytest.mark.parametrize("warmup, epochs, within", [
    (Choice(0, 2), 1, Choice(0)), (Choice(0, 5, 3), 4, Choice(0, 3)), (Range(0, 6), 4, Range(0, 3)),
    (Range(1, 8, log=True), 2, Range(1, 1, log=True)),
])
def test_max_epochs_from_the_command_line_narrows_what_must_stay_below_it(warmup, epochs, within, capsys):
    """`--max-epochs 1`, a quick try of a sweep file whose cosine warms up for 2 epochs
    (sweeps/digits.py): the warm-ups the search could draw at or past max_epochs are left
    out, and a warning says so; the sweep file's own max_epochs allows no such value."""
    space = {"cosine": {"initial_lr": 0.1, "warmup_epochs": warmup}, "step": STEP["step"]}
    sweep = Sweep(name="s", families=space, max_epochs=20).with_overrides(max_epochs=epochs)
    assert sweep.arms["sgd/cosine"].space["warmup_epochs"] == within
    assert sweep.arms["sgd/step"].space == Sweep(**GOOD).arms["sgd/step"].space
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0 and "families['cosine']" in warning and f"max_epochs={epochs}" in warning
    assert f"warmup_epochs` from {within} instead of {warmup}" in warning
    with pytest.raises(LrsweepError, match="warmup_epochs"):
        Sweep(name="s", families=space, max_epochs=epochs)
    with pytest.raises(LrsweepError, match="batch_size=0"):  # bad input is one line, no warning before it
        Sweep(name="s", families=space, max_epochs=20).with_overrides(max_epochs=epochs, batch_size=0)
    assert capsys.readouterr().err == ""


def test_max_epochs_that_leaves_no_value_below_it_is_bad_input_naming_the_values():
    sweep = Sweep(name="s", families={"cosine": {"initial_lr": 0.1, "warmup_epochs": Choice(3, 5)}}, max_epochs=20)
    with pytest.raises(LrsweepError, match=r"warmup_epochs=3.*warmup_epochs=\{3, 5\}"):
        sweep.with_overrides(max_epochs=2)


def test_with_overrides_applies_values_and_leaves_none_alone():
    sweep = Sweep(**GOOD, dataset="digits", num_samples=20)
    changed = sweep.with_overrides(num_samples=5, results="elsewhere", dataset=None, max_epochs=None)
    assert (changed.num_samples, changed.results) == (5, "elsewhere")
    assert (changed.dataset, changed.max_epochs, changed.families) == ("digits", 20, sweep.families)
    assert sweep.with_overrides(dataset=None, max_epochs=None) == sweep


def test_a_search_stops_poor_trials_early_by_default_and_fixed_configs_train_to_the_end():
    fixed = [{"family": "constant", "initial_lr": 0.1}, {"family": "step", "initial_lr": 0.1, "drop": 0.5,
                                                         "epochs_drop": 10}]
    assert Sweep(**GOOD).early_stopping == "asha"
    assert Sweep(name="fixed", configs=fixed).early_stopping is None  # the tutorial's experiment, as given
    assert Sweep(name="fixed", configs=fixed, early_stopping="asha").early_stopping == "asha"  # when asked for
    assert Sweep(**GOOD, early_stopping=None).early_stopping is None  # off, not the default
    assert Sweep(name="fixed", configs=fixed, early_stopping="budget").budgets[-1] == (20, 1)
    with pytest.raises(LrsweepError, match=r"runs its fixed configs as given \(2\). Received: num_samples=4$"):
        Sweep(name="fixed", configs=fixed).with_overrides(num_samples=4)  # --num-samples samples a search


def test_a_search_confirms_its_winners_by_default_and_fixed_configs_do_not():
    assert Sweep(**GOOD).confirm_seeds == 5
    assert Sweep(**GOOD, confirm_seeds=0).confirm_seeds == 0  # none, not the default
    assert Sweep(name="fixed", configs=[{"family": "constant", "initial_lr": 0.1}]).confirm_seeds == 0
    for bad in (1, -2, 2.5, True):
        with pytest.raises(LrsweepError, match=f"confirm_seeds={bad}"):
            Sweep(**GOOD, confirm_seeds=bad)


HEADER = "from lrsweep import Range, Sweep\n"


@pytest.mark.parametrize("body, named", [
    (None, ["not found"]),
    ("\nSWEEP = = Sweep(name='s')\n", [":3:", "SyntaxError"]),
    ("\n\nSWEEP = Sweep(name='s', families=FAMILIES)\n", [":4:", "NameError", "FAMILIES"]),
    ("sweep = Sweep(name='s', families={'adam': {'initial_lr': 0.01}})\n", ["SWEEP"]),
    ("SWEEP = Sweep(name='s', families={'adam': {'initial_lr': 0.01}}, max_epochs=0)\n", ["max_epochs=0"]),
], ids=["missing", "syntax-error", "name-error", "no-SWEEP", "bad-field"])
def test_a_bad_sweep_file_is_one_line_naming_the_file(tmp_path, body, named):
    path = tmp_path / "mine.py"
    if body is not None:
        path.write_text(HEADER + body)
    with pytest.raises(LrsweepError) as caught:
        load_sweep(str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for text in named:
        assert text in message


@pytest.mark.parametrize("name, content, named", [
    ("mine.py", "import sys\nsys.exit(3)\n", ["mine.py:2", "SystemExit: 3"]),
    ("mine.yaml", "name: mine\nfamilies: [step]\n", ["mine.yaml:1", "NameError", "a sweep file is Python"]),
    ("mine.py", "\0\0", ["mine.py: SyntaxError"]),
    ("folder", None, ["folder is a folder"]),
], ids=["exits", "yaml", "binary", "folder"])
def test_a_sweep_file_that_exits_is_not_python_or_is_a_folder_is_one_line_saying_so(tmp_path, name, content, named):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    with pytest.raises(LrsweepError) as caught:
        load_sweep(str(path))
    message = str(caught.value)
    assert "\n" not in message and "None" not in message
    for text in named:
        assert text in message, message


def test_a_sweep_file_imports_a_module_beside_it_as_python_file_does(tmp_path):
    """`from common import LR`, with common.py beside the sweep file: a ModuleNotFoundError.
    Two folders with a `common.py` each: each sweep file gets its own."""
    for folder, rate in (("a", 0.01), ("b", 0.2)):
        (tmp_path / folder / "helpers").mkdir(parents=True)
        (tmp_path / folder / "common.py").write_text(f"LR = {rate}\n")
        (tmp_path / folder / "helpers" / "__init__.py").write_text(f"LR = {rate}\n")
        (tmp_path / folder / "mine.py").write_text(
            HEADER + "from lrsweep import Choice\nfrom common import LR\nimport helpers\n"
            "SWEEP = Sweep(name='mine', families={'adam': {'initial_lr': Choice(LR, helpers.LR)}})\n")
    rates = [load_sweep(str(tmp_path / folder / "mine.py")).arms["adam/constant"].space["initial_lr"].values
             for folder in ("a", "b")]
    assert rates == [(0.01, 0.01), (0.2, 0.2)]
    assert str(tmp_path / "a") not in sys.path and "common" not in sys.modules and "helpers" not in sys.modules


def test_a_good_sweep_file_loads(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(HEADER + "SWEEP = Sweep(name='mine', families={'adam': {'initial_lr': Range(1e-4, 1e-2)}})\n")
    sweep = load_sweep(str(path))
    assert isinstance(sweep, Sweep) and sweep.name == "mine" and set(sweep.arms) == {"adam/constant"}


SEARCH = Sweep(name="space", max_epochs=12, families={
    "step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": Range(0.1, 0.9), "epochs_drop": Range(1, 6)},
    "cyclical": {"base_lr": Range(1e-4, 1e-2, log=True), "max_lr": Range(0.05, 0.5), "step_size": Choice(2, 4, 8),
                 "mode": Choice("triangular", "exp_range"), "gamma": 0.9},
    "polynomial": {"initial_lr": Range(0.01, 0.3), "power": Range(1, 3), "end_lr": 1e-4},  # float param, int bounds
    "adam": {"initial_lr": Range(1e-4, 1e-2, log=True)},
})


def check_sample(trial, fixed):
    label = trial.params["family"]
    arm = SEARCH.arms[label]
    sampled = {name: spec for name, spec in arm.space.items() if isinstance(spec, (Range, Choice))}
    assert set(trial.params) == {"family"} | {f"{label}/{name}" for name in sampled}
    assert fixed == {f"{label}/{name}": v for name, v in arm.space.items() if name not in sampled}
    for name, spec in sampled.items():
        value, distribution = trial.params[f"{label}/{name}"], trial.distributions[f"{label}/{name}"]
        if isinstance(spec, Choice):
            assert value in spec.values and isinstance(distribution, CategoricalDistribution)
            continue
        assert spec.low <= value <= spec.high
        assert (distribution.low, distribution.high, distribution.log) == (spec.low, spec.high, spec.log)
        integer = FAMILIES[arm.family].param(name).kind is int
        assert isinstance(value, int) is integer and isinstance(distribution, IntDistribution) is integer
    return label


def test_tpe_samples_each_family_inside_its_own_ranges():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    space = SearchSpace(SEARCH.arms)
    chosen = set()
    for _ in range(60):
        trial = study.ask()
        fixed = space(trial)
        chosen.add(check_sample(trial, fixed))
        study.tell(trial, sum(v for k, v in trial.params.items() if k.endswith("_lr")))
    assert chosen == {"sgd/step", "sgd/cyclical", "sgd/polynomial", "adam/constant"}


def test_the_search_space_survives_pickling():
    space = pickle.loads(pickle.dumps(SearchSpace(SEARCH.arms)))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    trial = study.ask()
    check_sample(trial, space(trial))


def test_the_search_draws_no_configuration_twice_where_the_space_has_new_ones():
    """A fixed family (Adam at Keras' default rate, a baseline) that does best is one
    configuration: TPE drew it again and again (22 of 30 trials, each the same training)."""
    sweep = Sweep(name="baseline", max_epochs=5, num_samples=30, families={
        "adam": {"initial_lr": 0.001}, "constant": {"initial_lr": Range(1e-3, 0.5, log=True)},
        "step": {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": Choice(2, 5)}})
    search, count = search_algorithm(sweep)
    configs = []
    for k in range(count):
        config = search.suggest(str(k))
        configs.append(json.dumps(config, sort_keys=True))
        search.on_trial_complete(str(k), {"val_accuracy": 0.9 if config["family"] == "adam/constant" else 0.5})
    assert len(set(configs)) == len(configs) == 30 and sum('"adam"' in c for c in configs) == 1


@pytest.mark.parametrize("draws", [None, 1])  # Optuna's draws in a row before a configuration is queued
@pytest.mark.parametrize("families, size", [
    ({"adam": {"initial_lr": 0.001}, "step": {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": Choice(2, 5, 10)}}, 4),
    ({"step": {"initial_lr": Choice(0.01, 0.1), "drop": 0.5, "epochs_drop": Range(2, 4)},
      "cosine": {"initial_lr": 0.1, "warmup_epochs": Choice(0, 1)}}, 8),
    ({"step": {"initial_lr": 0.1, "drop": Choice(0.5, 1 / 2), "epochs_drop": 2}}, 1),  # one value, given twice
    ({"step": {"initial_lr": 0.1, "drop": Range(0.2, 0.5), "epochs_drop": 2},
      "adam": {"initial_lr": 0.001}}, None),
    ({"constant": {"initial_lr": Range(0.1, 0.1)}, "exponential": {"initial_lr": 0.1, "k": Range(0.01, 0.5)}}, None),
])
def test_a_search_of_fewer_configurations_than_num_samples_trains_each_once(families, size, draws, capsys):
    sweep = Sweep(name="few", max_epochs=5, num_samples=10, families=families)
    assert sweep.space_size == size and sweep.trial_count == min(10, size or 10)
    search, count = search_algorithm(sweep)
    assert count == sweep.trial_count
    search.DRAWS = draws or search.DRAWS
    configs = []
    for k in range(count + 1):  # once more than Tune asks: the space has no configuration left
        if (config := search.suggest(str(k))) is Searcher.FINISHED:
            break
        configs.append(json.dumps(config, sort_keys=True))
        search.on_trial_complete(str(k), {"val_accuracy": 0.5})
    assert len(set(configs)) == len(configs) == min(count + 1, size or count + 1)
    ended = f"the search ends with the {size} it has" in capsys.readouterr().err
    assert ended is (size is not None)
    resumed = pickle.loads(pickle.dumps(search))  # as Tune saves and restores it
    assert (resumed.suggest("again") is Searcher.FINISHED) is (size is not None)


def family_params(config):
    """The parameters of a trial config's family, as the store keeps them."""
    optimizer, family = config["family"].split("/")
    return config[optimizer][family]


def test_a_resumed_search_counts_the_trials_stored_after_tunes_last_save(tmp_path):
    """Trials that began after Tune's last save before a kill, and ended stored, are told to
    the restored search as the trials they were: it draws that many fewer, and none of
    their configurations again. What tells them is no part of the state Tune saves."""
    sweep = Sweep(name="late", max_epochs=5, num_samples=8, families={
        "step": {"initial_lr": 0.1, "drop": Choice(0.25, 0.5), "epochs_drop": Choice(2, 5, 10)},
        "constant": {"initial_lr": Range(1e-3, 0.5, log=True)}})
    search, count = search_algorithm(sweep)
    drawn = [search.suggest(str(k)) for k in range(2)]
    search.save(tmp_path / "searcher.pkl")  # Tune's last save
    late = [search.suggest(trial_id) for trial_id in ("late-1", "late-2")]  # then the kill
    stored = [{"trial_id": trial_id, "label": config["family"], "status": "completed", "value": 0.5,
               "params": family_params(config)}
              for trial_id, config in [("0", drawn[0]), ("late-1", late[0]), ("late-2", late[1])]]

    resumed, _ = search_algorithm(sweep)
    counted = []
    resumed.resume_with(stored, count, counted.extend)  # the driver, before Tune restores the searcher
    resumed.restore(tmp_path / "searcher.pkl")
    assert [trial["trial_id"] for trial in counted] == ["late-1", "late-2"]
    more = []
    while (config := resumed.suggest(f"new-{len(more)}")) is not Searcher.FINISHED:
        more.append(config)
    assert len(more) == count - 4
    keys = [json.dumps(config, sort_keys=True) for config in drawn + late + more]
    assert len(set(keys)) == len(keys)
    told = {tuple(sorted(trial.params.items())) for trial in resumed._ot_study.get_trials()
            if trial.state == optuna.trial.TrialState.COMPLETE}
    assert {tuple(sorted(search._space.optuna_params(c["family"], family_params(c)).items())) for c in late} == told
    resumed.save(tmp_path / "again.pkl")
    assert not {"stored", "total", "counted"} & set(pickle.loads((tmp_path / "again.pkl").read_bytes()))
    again, _ = search_algorithm(sweep)  # killed again, and resumed with nothing new stored
    again.resume_with([], count, counted.extend)
    again.restore(tmp_path / "again.pkl")
    assert again.suggest("one-more") is Searcher.FINISHED and len(counted) == 2


def test_resumed_fixed_configs_skip_the_configs_of_trials_stored_after_tunes_last_save(tmp_path):
    """Fixed configs (a sweep's `configs`, a rung, the confirmation runs) go on after a kill
    without the configs of trials stored after Tune's last save: each stored trial stands
    for one config still to hand out with its key (a config given twice runs twice). A state
    saved before the searcher kept its trial ids skips none."""
    configs = [{"family": "sgd/constant", "sgd": {"constant": {"initial_lr": lr}}} for lr in (0.1, 0.2, 0.3, 0.2, 0.5)]
    search = FixedConfigs(configs, "val_accuracy", "max")
    assert [search.suggest(trial_id) for trial_id in ("0", "1")] == configs[:2]
    search.save(tmp_path / "searcher.pkl")  # Tune's last save
    assert [search.suggest(trial_id) for trial_id in ("late-a", "late-b")] == configs[2:4]  # then the kill

    def key_of(config):
        return json.dumps(config, sort_keys=True)

    stored = [{"trial_id": trial_id, "key": key_of(configs[k])} for trial_id, k in (("1", 1), ("late-a", 2),
                                                                                   ("late-b", 3))]
    resumed = FixedConfigs([], "val_accuracy", "max")
    counted = []
    resumed.resume_with(stored, key_of, counted.extend)  # the driver, before Tune restores the searcher
    resumed.restore(tmp_path / "searcher.pkl")
    assert resumed.suggest("new") == configs[4] and resumed.suggest("newer") is Searcher.FINISHED
    assert [trial["trial_id"] for trial in counted] == ["late-a", "late-b"] and resumed.spent

    resumed.save(tmp_path / "ended.pkl")  # Tune's generator saved as finished asks no more:
    ended = FixedConfigs([], "val_accuracy", "max")  # the stage is complete all the same
    ended.resume_with([], key_of, counted.extend)
    ended.restore(tmp_path / "ended.pkl")
    assert ended.spent and len(counted) == 2

    # a config given twice, two kills: each stored trial stands for another of its copies
    twice = FixedConfigs([configs[0], configs[1], configs[1]], "val_accuracy", "max")
    twice.suggest("t0")
    twice.save(tmp_path / "first.pkl")
    twice.suggest("tX")  # stored, then the first kill
    again = FixedConfigs([], "val_accuracy", "max")
    again.resume_with([{"trial_id": "tX", "key": key_of(configs[1])}], key_of, counted.extend)
    again.restore(tmp_path / "first.pkl")
    again.save(tmp_path / "second.pkl")  # saved as the resume starts
    assert again.suggest("t2") == configs[1]  # stored, then the second kill
    last = FixedConfigs([], "val_accuracy", "max")
    last.resume_with([{"trial_id": trial_id, "key": key_of(configs[1])} for trial_id in ("tX", "t2")], key_of,
                     counted.extend)
    last.restore(tmp_path / "second.pkl")
    assert last.suggest("t3") is Searcher.FINISHED and [t["trial_id"] for t in counted[2:]] == ["tX", "t2"]

    (tmp_path / "old.pkl").write_bytes(pickle.dumps((configs, 2)))
    old = FixedConfigs([], "val_accuracy", "max")
    old.resume_with(stored, key_of, counted.append)
    old.restore(tmp_path / "old.pkl")
    assert [old.suggest(str(k)) for k in range(3)] == configs[2:] and len(counted) == 4


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_resumed_search_judges_its_trials_against_those_stored_after_tunes_last_save(mode):
    """The rung results of trials that Tune's saved state does not hold (stored after its
    last save before a kill) go into ASHA's rungs as it would have recorded them: a later
    trial below them at a rung stops there."""
    sweep = Sweep(name="late", max_epochs=9, num_samples=8, grace_period=1, reduction_factor=3,
                  metric="val_accuracy" if mode == "max" else "val_loss",
                  families={"constant": {"initial_lr": Range(1e-3, 0.5, log=True)}})
    asha = scheduler(sweep)
    asha.set_search_properties(sweep.metric, sweep.mode)  # as Tune does
    sign = 1 if mode == "max" else -1
    asha.record_stored({"a": {1: 0.5 * sign, 2: 0.6 * sign, 3: 0.8 * sign}, "b": {1: 0.4 * sign}})
    rungs = dict(asha._brackets[0]._rungs)
    assert rungs == {9: {}, 3: {"a": 0.8}, 1: {"a": 0.5, "b": 0.4}}
    fractional = scheduler(sweep.with_overrides(reduction_factor=2.5))  # rungs 1, 2.5, 6.25: reported at 1, 3, 7
    fractional.set_search_properties(sweep.metric, sweep.mode)
    fractional.record_stored({"a": {epoch: epoch / 10 * sign for epoch in range(1, 8)}})
    assert dict(fractional._brackets[0]._rungs) == {6.25: {"a": 0.7}, 2.5: {"a": 0.3}, 1: {"a": 0.1}}
    later = Trial("__fake", trial_id="later", stub=True)
    asha.on_trial_add(None, later)
    assert asha.on_trial_result(None, later, {"epoch": 1, sweep.metric: 0.6 * sign}) == "CONTINUE"
    assert asha.on_trial_result(None, later, {"epoch": 3, sweep.metric: 0.7 * sign}) == "STOP"


@pytest.mark.parametrize("label, params", [
    ("sgd/step", {"initial_lr": 0.1, "drop": 0.5, "epochs_drop": 2}),
    ("adam/constant", {"initial_lr": 0.001}),
])
def test_trial_config_nests_params_under_optimizer_and_family(label, params):
    optimizer, family = label.split("/")
    assert trial_config(SEARCH.arms[label], params) == {"family": label, optimizer: {family: params}}


def test_momentum_reaches_keras_as_the_float_it_requires():
    """Keras' SGD refuses an integer momentum (`momentum=0`, `momentum=1`): the sweep hands
    it a float, so that such a sweep trains instead of failing every trial."""
    import keras

    args = Sweep(**GOOD, optimizer_args={"momentum": 0, "nesterov": True}).optimizer_args
    assert args == {"momentum": 0.0, "nesterov": True} and isinstance(args["momentum"], float)
    assert keras.optimizers.SGD(learning_rate=0.1, **args).momentum == 0.0


def test_every_activation_a_sweep_accepts_is_one_a_dense_layer_takes():
    import keras
    import numpy as np

    from lrsweep.models import ACTIVATIONS

    for name in ACTIVATIONS:
        out = keras.layers.Dense(4, activation=name)(np.ones((2, 3), dtype="float32"))
        assert out.shape[0] == 2, name


@pytest.mark.parametrize("state", [{"rungs": [[(2, {"a": 0.9})], [(6, {"a": 0.9})]]},  # rungs of two brackets
                                   {"scheduler": b"ASHA pickled whole, as a first version saved it"}])
def test_early_stopping_rungs_a_resume_cannot_take_back_warn_and_stay_empty(state, capsys):
    """`--resume` puts ASHA's rungs back from Tune's saved state (`KeptScheduler`); an
    exception there would make Tune start the whole experiment again, so rungs saved in
    another shape (another version of lrsweep or Ray) leave the rungs empty, with a warning."""
    from lrsweep.run.search import scheduler

    asha = scheduler(Sweep(**GOOD))
    (kept,) = asha.callbacks()
    kept.set_state(state)
    assert "early-stopping rungs of the run could not be restored" in capsys.readouterr().err
    assert kept.get_state() == {"rungs": [[(milestone, {}) for milestone in (9, 3, 1)]]}  # 20 epochs, grace 1, factor 3


def test_numpy_numbers_in_a_search_space_are_the_numbers_they_are():
    """A sweep file that builds its ranges with numpy (np.int64 from np.arange, np.float32):
    Optuna and the stored JSON get Python's numbers."""
    import json

    import numpy as np

    sweep = Sweep(name="np", families={"step": {"initial_lr": Choice(*np.float32([0.1, 0.2])), "drop": np.float64(0.5),
                                                "epochs_drop": Range(np.int64(2), np.int64(5))}}, max_epochs=10)
    space = sweep.arms["sgd/step"].space
    assert [type(v) for v in space["initial_lr"].values] == [float, float] and type(space["drop"]) is float
    assert (type(space["epochs_drop"].low), type(space["epochs_drop"].high)) == (int, int)
    json.dumps({name: getattr(spec, "values", spec) for name, spec in space.items() if not isinstance(spec, Range)})
