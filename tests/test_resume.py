"""What `--resume` checks of a run's saved settings (`lrsweep.run.resume`), on real files;
the launches that save and read them run in test_end_to_end."""

import argparse
import pathlib
import re

import pytest

from lrsweep import Choice, LrsweepError, Range, Sweep
from lrsweep.run.jobs import launch_command
from lrsweep.results.store import write_rows
from lrsweep.run.resume import LOCK_FILE, SETTINGS_FILE, check_not_running, holding, resumed_sweep, save_settings
from tests.conftest import TEST_DATA

SEARCH = Sweep(name="s", dataset="csv:/data/launched/ionosphere.csv", max_epochs=9, num_samples=12,
               families={"step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": 0.5, "epochs_drop": Choice(5, 10)},
                         "exponential": {"initial_lr": 0.1, "k": Range(0.005, 0.2, log=True)}})


def saved(folder, sweep=SEARCH):
    save_settings(str(folder), sweep)
    return str(folder)


def test_a_setting_no_flag_gives_is_the_runs_and_one_a_flag_gives_must_be(tmp_path):
    folder = saved(tmp_path)
    forgot = SEARCH.with_overrides(max_epochs=50, num_samples=40)  # the sweep file's, the flags forgotten
    sweep, taken = resumed_sweep(forgot, folder, "run", flagged=set())
    assert (sweep.max_epochs, sweep.num_samples, taken) == (9, 12, {"num_samples": 12, "max_epochs": 9})
    with pytest.raises(LrsweepError, match=r"^Argument `max_epochs` \(--max-epochs\) must be what run 'run' was "
                                           r"launched with, 9, .* Received: max_epochs=50$"):
        resumed_sweep(forgot, folder, "run", flagged={"max_epochs"})


def test_a_family_changed_in_the_sweep_file_is_named_down_to_its_parameter(tmp_path):
    folder = saved(tmp_path)
    edited = Sweep(**{**SEARCH.__dict__, "families": {**SEARCH.families, "exponential": {
        "initial_lr": 0.1, "k": Range(0.005, 0.3, log=True)}}})
    with pytest.raises(LrsweepError) as info:
        resumed_sweep(edited, folder, "run", flagged=set())
    message = str(info.value)
    assert message.startswith("Argument `families['exponential']['k']` must be what run 'run' was launched with, ")
    assert "high=0.2" in message and message.endswith("Received: families['exponential']['k']=\"Range(low=0.005, "
                                                      "high=0.3, log=True)\"")


def test_fixed_configs_run_as_given_whatever_num_samples_says(tmp_path):
    configs = Sweep(name="c", configs=[{"family": "constant", "initial_lr": 0.1}], max_epochs=3)
    folder = saved(tmp_path, configs)
    sweep, taken = resumed_sweep(configs.with_overrides(results="results"), folder, "run", flagged=set())
    assert taken == {} and sweep.configs == configs.configs
    edited = Sweep(**{**configs.__dict__, "num_samples": 5})  # a field that does nothing for configs
    assert resumed_sweep(edited, folder, "run", flagged=set())[1] == {}


def test_a_data_file_that_moved_is_the_same_run_and_another_file_is_not(tmp_path):
    folder = saved(tmp_path)
    moved = SEARCH.with_overrides(dataset="csv:/data/now/ionosphere.csv")
    assert resumed_sweep(moved, folder, "run", flagged={"dataset"})[0].dataset == "csv:/data/now/ionosphere.csv"
    other = SEARCH.with_overrides(dataset="csv:/data/launched/sonar.csv")
    with pytest.raises(LrsweepError, match=r"`dataset` \(--dataset\).*sonar.csv"):
        resumed_sweep(other, folder, "run", flagged={"dataset"})


def test_a_resume_trains_on_the_data_the_run_was_launched_with(tmp_path):
    """The run keeps a fingerprint of its data as trained on (rows, inputs, classes, a digest
    of the arrays): the same file moved elsewhere resumes; one edited since (a label, a column
    fewer) would go on from checkpoints and a search of other data: refused, saying both."""
    from lrsweep.data import load_dataset
    from lrsweep.run.resume import check_data

    rows = [row.split(",") for row in (pathlib.Path(TEST_DATA) / "ionosphere.csv").read_text().splitlines()]

    def data(name, rows):
        path = tmp_path / name / "ionosphere.csv"
        path.parent.mkdir()
        header = [f"f{k}" for k in range(len(rows[0]) - 1)] + ["label"]
        path.write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n")
        sweep = SEARCH.with_overrides(dataset=f"csv:{path}", validation_split=0.25)
        return sweep, load_dataset(sweep.dataset, subsample=None, validation_split=0.25, scale="auto", seed=0)

    launched, launched_data = data("launched", rows)
    save_settings(str(tmp_path / "run"), launched, launched_data)
    check_data(str(tmp_path / "run"), "run", *data("moved", rows))
    relabelled = [rows[0][:-1] + ["b" if rows[0][-1] == "g" else "g"], *rows[1:]]
    fewer = [row[:33] + row[34:] for row in rows]
    for name, edited, now in (("relabelled", relabelled, "263 training and 88 validation rows of 34 features"),
                              ("fewer", fewer, "263 training and 88 validation rows of 33 features")):
        with pytest.raises(LrsweepError) as info:
            check_data(str(tmp_path / "run"), "run", *data(name, edited))
        message = str(info.value)
        assert message.startswith("Argument `dataset` must hold the data run 'run' was launched with, 263 training "
                                  "and 88 validation rows of 34 features, 2 classes (b, g), digest "), message
        assert f"Received: dataset='csv:{tmp_path / name / 'ionosphere.csv'}', {now}, 2 classes" in message
        assert len(set(re.findall(r"digest (\w+)", message))) == 2


def test_a_resume_into_another_results_folder_than_the_one_holding_the_runs_trials_is_refused(tmp_path):
    """Where the run's folder holds trials of the run that the folder given does not, a
    resume storing there would split the run (its ranking and confirmation runs read one
    folder); a folder moved (the old one gone) or copied (holding them all) is the run's, and
    the folder a resume stored into is the run's from then on."""
    launched, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    into = {folder: SEARCH.with_overrides(results=str(folder)) for folder in (launched, elsewhere)}
    folder = saved(tmp_path / "tune", into[launched])
    write_rows(str(launched), "trials", "ionosphere", "run", [{"trial_id": "a", "status": "completed"}])

    def refused(to, holds, missing):
        with pytest.raises(LrsweepError, match=rf"^Argument `results` must be a folder holding the trials run 'run' "
                                               rf"has stored, as \"{re.escape(str(holds))}\" does \({missing} of them "
                                               rf"not in this one\), .* Received: results=\"{re.escape(str(to))}\"$"):
            resumed_sweep(into[to], folder, "run", flagged=set())

    refused(elsewhere, launched, 1)
    assert resumed_sweep(into[launched], folder, "run", flagged=set())[1] == {}
    assert resumed_sweep(into[elsewhere], folder, "another", flagged=set())[1] == {}  # the check is the run's
    write_rows(str(elsewhere), "trials", "ionosphere", "run", [{"trial_id": "a", "status": "completed"}])  # copied
    assert resumed_sweep(into[elsewhere], folder, "run", flagged=set())[1] == {}
    save_settings(folder, into[elsewhere])  # as the resume into it keeps it, which then stores trial b
    write_rows(str(elsewhere), "trials", "ionosphere", "run", [{"trial_id": "b", "status": "completed"}])
    refused(launched, elsewhere, 1)  # the folder copied from lacks b
    elsewhere.rename(tmp_path / "moved")
    moved = SEARCH.with_overrides(results=str(tmp_path / "moved"))
    assert resumed_sweep(moved, folder, "run", flagged=set())[1] == {}


def test_retries_changed_in_the_sweep_file_are_refused(tmp_path):
    """Tune's saved state keeps each trial's retries (`max_failures`): the sweep file's new
    value would not reach them."""
    folder = saved(tmp_path)
    edited = Sweep(**{**SEARCH.__dict__, "max_failures": 5})
    with pytest.raises(LrsweepError, match=r"^Argument `max_failures` must be what run 'run' was launched with, 2, "
                                           r".* Received: max_failures=5$"):
        resumed_sweep(edited, folder, "run", flagged=set())


def test_a_run_launched_with_max_epochs_that_narrowed_its_space_resumes_without_the_flag(tmp_path):
    """`--max-epochs 2` left the cosine warm-ups of 2 out of the run's space: a `--resume`
    without the flag takes the run's max_epochs, and the same space with it."""
    file = Sweep(name="s", max_epochs=20, families={"cosine": {"initial_lr": 0.1, "warmup_epochs": Choice(0, 2)}})
    folder = saved(tmp_path, file.with_overrides(max_epochs=2))
    sweep, taken = resumed_sweep(file, folder, "run", flagged=set())
    assert taken == {"max_epochs": 2} and sweep.arms["sgd/cosine"].space["warmup_epochs"] == Choice(0)
    with pytest.raises(LrsweepError, match=r"^Argument `max_epochs` \(--max-epochs\) must be what run 'run' was "
                                           r"launched with, 2, .*; also families\. Received: max_epochs=20$"):
        resumed_sweep(file, folder, "run", flagged={"max_epochs"})


def test_settings_that_cannot_be_read_are_not_checked_and_say_so(tmp_path, capsys):
    (tmp_path / SETTINGS_FILE).write_text('{"max_epochs": 9')  # cut short
    sweep, taken = resumed_sweep(SEARCH.with_overrides(max_epochs=50), str(tmp_path), "run", flagged={"max_epochs"})
    assert sweep.max_epochs == 50 and taken == {}
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and SETTINGS_FILE in warning and "not checked" in warning


def test_a_submitted_resume_leaves_the_dataset_to_the_run(tmp_path, monkeypatch):
    """`submit --resume` without --dataset: the job's launch takes the run's dataset. The
    sweep file's (a relative path made absolute for the job) would read as a --dataset the
    user gave, and be refused where the run was launched with another."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.py").write_text("")
    sweep = Sweep(name="s", dataset="csv:data/d.csv", configs=[{"family": "constant", "initial_lr": 0.1}])
    args = argparse.Namespace(dataset=None, data_dir=None, storage=None, num_samples=None, max_epochs=None,
                              confirm_seeds=None, seed=None, name="run1", resume=True)
    command, _ = launch_command("s.py", sweep, args)
    assert "--dataset" not in command and command[-3:] == ["--name", "run1", "--resume"]
    command, _ = launch_command("s.py", sweep, argparse.Namespace(**{**vars(args), "resume": False}))
    assert command[command.index("--dataset") + 1] == f"csv:{tmp_path}/data/d.csv"


def test_a_run_another_launch_holds_is_refused_before_the_launch_and_nothing_is_written(tmp_path):
    """`check_not_running`, which a launch's checks ask before its data is read, answers as
    the launch's own lock (`holding`) would, and leaves the lock file as the holder wrote it."""
    folder = str(tmp_path / "run")
    check_not_running(folder, "run")  # never launched: nothing to hold, nothing made
    assert not (tmp_path / "run").exists()
    with holding(folder, "run"):
        written = (tmp_path / "run" / LOCK_FILE).read_text()
        with pytest.raises(LrsweepError, match=rf"^Argument `name` names a run that another launch is running now "
                                               rf"\({re.escape(written)}\): .* Received: name='run'$"):
            check_not_running(folder, "run")
    check_not_running(folder, "run")  # the launch has ended
    assert (tmp_path / "run" / LOCK_FILE).read_text() == written
