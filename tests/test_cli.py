"""The command line as a user meets it: bad input is one line and exit 2 before Ray or
TensorFlow are imported (but for a dataset to download); `schedule` prints and draws;
`validate` shows the sweep."""

import csv
import io
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, free_port, lrsweep
from tests.conftest import assert_refused as refused

# Runs the CLI in a fresh interpreter, then reports which heavy frameworks it imported.
PROBE = ("import sys\nfrom lrsweep.cli import main\ncode = main(sys.argv[1:])\n"
         "print('imported:', ','.join(m for m in ('ray', 'tensorflow', 'keras') if m in sys.modules))\n"
         "sys.exit(code)\n")


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def sweep_file(tmp_path, body, name="mine.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


GOOD = """
from lrsweep import Range, Sweep
SWEEP = Sweep(name="mine", families={"step": {"initial_lr": Range(0.01, 0.1), "drop": 0.5, "epochs_drop": 2}},
              max_epochs=3)
"""


def assert_refused(done, *words):
    """Refused as every command refuses bad input, neither Ray nor TensorFlow imported (PROBE's last line)."""
    refused(done, *words, stdout="imported: \n")


@pytest.mark.parametrize("replace, words", [
    (('"step"', '"stepp"'), ["stepp", "Valid families"]),
    (("0.01, 0.1", "-0.01, 0.1"), ["initial_lr", "-0.01"]),
    (('"drop": 0.5', '"drop": 1.5'), ["drop", "1.5"]),
    (('"epochs_drop": 2', '"epochs_drop": 0'), ["epochs_drop", "0"]),
    (("max_epochs=3", 'max_epochs=3, model="resnet"'), ["model", "resnet"]),
    (("max_epochs=3", 'max_epochs=3, dataset="imagenet"'), ["imagenet", "digits"]),
    (("max_epochs=3", "max_epochs=3, batch_size=0"), ["batch_size", "0"]),
    (("Sweep(", "Sweep(bogus=1, "), ["mine.py", "bogus"]),
    (("from lrsweep", "import nothing_here\nfrom lrsweep"), ["mine.py:2", "nothing_here"]),
    (("max_epochs=3)", "max_epochs=3"), ["mine.py", "SyntaxError"]),
    (("max_epochs=3", "max_epochs=3, validation_split=None"), ["digits", "validation_split=None"]),
    (("max_epochs=3", 'max_epochs=3, model="cnn", dataset="ionosphere"'), ["model='cnn'", "ionosphere"]),
    # Keras' errors in every trial: a step count past int64, a fourth pooling of 8x8 digits
    (('"epochs_drop": 2', '"epochs_drop": 2**62'), ["epochs_drop", "2147483647"]),
    (("max_epochs=3", 'max_epochs=3, model="cnn", model_args={"filters": (8, 8, 8, 8)}'),
     ["filters=(8, 8, 8, 8)", "at most 3", "8x8"]),
    # sizes Ray or TensorFlow refuse in every trial, or arithmetic on them fails before a word is said
    (("max_epochs=3", "max_epochs=3, batch_size=2**63"), ["batch_size", "9223372036854775808", "2147483647"]),
    (("max_epochs=3", 'max_epochs=3, model_args={"hidden": (2**63,)}'), ["hidden", "9223372036854775808"]),
    (("max_epochs=3", "max_epochs=3, grace_period=10**400"), ["grace_period", "401 digits"]),
    (("max_epochs=3", "max_epochs=3, reduction_factor=10**400"), ["reduction_factor", "401 digits"]),
    (("max_epochs=3", 'max_epochs=3, resources={"cpu": 0.00001, "gpu": 0}'), ["resources['cpu']", "1e-05", "0.0001"]),
    (("max_epochs=3", "max_epochs=3, confirm_seeds=2**33"), ["Received: confirm_seeds=8589934592"]),
    # the wrong type of value: named, not Python's own words about it
    (("max_epochs=3", 'max_epochs=3, model=["mlp"]'), ["model", "['mlp']"]),
    (("max_epochs=3", 'max_epochs=3, model="cnn", model_args={"dense": True}'), ["dense", "True"]),
    (('"epochs_drop": 2}', '"epochs_drop": 2}, "cyclical": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2, '
                           '"mode": Range("triangular", "exp_range")}'),
     ["mode", "Choice", "'triangular'..'exp_range'"]),
    # in (0, 1) as a float64, 0 in the float32 Keras trains in
    (('"drop": 0.5', '"drop": 1e-300'), ["drop", "1e-300", "float32"]),
    # Ray schedules a GPU request above one GPU only in whole GPUs: the trials never started
    (("max_epochs=3", 'max_epochs=3, resources={"cpu": 1, "gpu": 1.5}'), ["resources['gpu']", "1.5", "whole"]),
    (("Range(0.01, 0.1)", 'Range(0.01, 0.1, log="no")'), ["log", "'no'", "True or False"]),  # sampled as log
    (('families={"step": {"initial_lr": Range(0.01, 0.1), "drop": 0.5, "epochs_drop": 2}}',
      'configs=[{"family": None, "initial_lr": 0.1}]'), ["configs[0]['family']", "None"]),
    # a results or storage URI pyarrow cannot open: a traceback once Ray had started
    (("max_epochs=3", 'max_epochs=3, results="ftp://host/results"'), ["results='ftp://host/results'", "s3://"]),
    (("max_epochs=3", 'max_epochs=3, storage="s3://"'), ["storage='s3://'", "bucket"]),
    (("max_epochs=3", 'max_epochs=3, results="file:///tmp/results"'), ["results='file:///tmp/results'", "gs://"]),
])
@pytest.mark.parametrize("command", ["validate", "launch"])
def test_a_broken_sweep_file_is_one_line_naming_the_field(tmp_path, command, replace, words):
    done = cli(command, sweep_file(tmp_path, GOOD.replace(*replace)), "--results", str(tmp_path / "r"))
    assert_refused(done, *words)
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize("args, words", [
    (["launch", "sweeps/no_such_sweep.py"], ["no_such_sweep.py"]),
    (["launch", "sweeps/digits.py", "--max-epochs", "0"], ["max_epochs", "0"]),
    (["launch", "sweeps/digits.py", "--num-samples", "-3"], ["num_samples", "-3"]),
    (["launch", "sweeps/digits.py", "--num-samples", "many"], ["num-samples", "many"]),
    (["launch", "sweeps/digits.py", "--no-such-flag"], ["no-such-flag"]),
    (["launch", "sweeps/digits.py", "--dataset", "no_such_dataset"], ["no_such_dataset"]),
    (["launch", "sweeps/digits.py", "--dataset", "csv:/no/such.csv"], ["/no/such.csv"]),
    (["launch", "sweeps/ionosphere.py", "--data-dir", "/no/such/folder"], ["/no/such/folder"]),
    (["launch", "sweeps/digits.py", "--resume"], ["resume", "name"]),
    (["validate", "sweeps/cifar.py", "--dataset", "ionosphere", "--data-dir", "tests/data"],
     ["ionosphere", "no test split", "validation_split=None"]),
    (["validate", "sweeps/digits.py", "--dataset", "csv:tests/data/ionosphere.csv?target=nope"], ["target='nope'"]),
    (["validate", "sweeps/digits.py", "--name", "never-ran", "--resume"], ["name", "never-ran", "resumed"]),
    (["launch", "sweeps/digits.py", "--name", "has space"], ["name", "has space"]),
    # folders named after it (and more) are at most 255 bytes: a 300-letter name was a traceback
    (["launch", "sweeps/digits.py", "--name", "a" * 129], ["name", "at most 128", "a" * 129]),
    (["launch", "sweeps/digits.py", "--address", "http://127.0.0.1:8265"], ["address", "http://127.0.0.1:8265",
                                                                           "lrsweep submit"]),
    (["validate", "sweeps/digits.py", "--address", "head-node"], ["address='head-node'", "host:port"]),
    (["fit-schedule", "--dataset", "digits", "--confirm", "--address", "head:99999"], ["address='head:99999'"]),
    (["fit-schedule", "--dataset", "digits", "--confirm", "--address", "ray://head:10001"],
     ["address='ray://head:10001'", "--address auto"]),
    (["launch", "sweeps/digits.py", "--address", "ray://head"], ["address='ray://head'", "ray://HEAD:10001"]),
    (["launch", "sweeps/digits.py", "--name", "mine-confirm"], ["name", "mine-confirm", "-confirm"]),
    (["validate", "sweeps/digits.py", "--name", "mine-rung2"], ["name", "mine-rung2", "-rung"]),
    (["schedule", "step", "initial_lr=0.1", "drop=1.5", "epochs_drop=10", "--epochs", "5"], ["drop", "1.5"]),
    (["schedule", "step", "initial_lr=x", "drop=0.5", "epochs_drop=10", "--epochs", "5"], ["initial_lr", "x"]),
    (["schedule", "step", "initial_lr", "--epochs", "5"], ["name=value", "initial_lr"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=2", "initial_lr=5", "--epochs", "5"],
     ["initial_lr", "twice", "0.1", "initial_lr=5"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=1e400", "--epochs", "5"], ["epochs_drop", "1e400"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=10", "--epochs", "0"], ["epochs", "0"]),
    (["schedule", "cosine", "initial_lr=0.1", "alpha=0.99999999999", "--epochs", "5"], ["alpha", "float32", "1.0"]),
    (["schedule", "cyclical", "base_lr=0.1", "max_lr=0.100000001", "step_size=2", "--epochs", "5"],
     ["base_lr", "max_lr=0.100000001", "equal in float32"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=2", "bad\nname=1", "--epochs", "5"],
     ["'bad\\nname'"]),
    (["validate", "sweeps/digits.py", "--max-epochs", "1" + "0" * 400], ["max_epochs", "401 digits"]),
    # a line per epoch, computed in one call: 3e9 of them ran for minutes before printing anything
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=10", "--epochs", "3000000000"],
     ["epochs", "3000000000", "from 1 to 10000000"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=1e30", "--epochs", "5"], ["epochs_drop", "31 digits"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=3", "--epochs", "5", "--steps-per-epoch",
      str(10**19), "--granularity", "step"], ["steps_per_epoch", str(10**19)]),
    (["schedule", "time_based", "initial_lr=0.1", "decay=0.01", "decay_unit=step", "--epochs", "5"],
     ["steps_per_epoch"]),
    (["schedule", "cosine", "initial_lr=0.1", "warmup_epochs=5", "--epochs", "5"], ["warmup_epochs", "5"]),
    (["no-such-command"], ["no-such-command"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=2", "--epochs", "5", "--plot", "README.md/s.png"],
     ["--plot", "README.md is a file"]),
    (["plot", "--dataset", "digits", "--out", "README.md"], ["--out", "must be a folder", "README.md"]),
    (["schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=2", "--epochs", "5", "--plot", "rates.txt"],
     ["--plot", "rates.txt", ".png", ".svg"]),
    (["find-lr", "sweeps/digits.py", "--plot", "range"], ["--plot", "'range'", ".png"]),
    (["status", "", "--address", "http://127.0.0.1:9"], ["JOB", "submission id", "''"]),
    (["launch", "sweeps/digits.py", "--dashboard-host", "999.1.1.1"], ["--dashboard-host", "'999.1.1.1'", "listen on"]),
    # a cluster's dashboard is its own: the flag would be dropped without a word
    (["launch", "sweeps/digits.py", "--address", "auto", "--dashboard-host", "0.0.0.0"],
     ["dashboard_host='0.0.0.0'", "address='auto'", "ray start --dashboard-host"]),
    (["validate", "sweeps/digits.py", "--address", "ray://head:10001", "--dashboard-host", "127.0.0.1"],
     ["dashboard_host='127.0.0.1'", "address='ray://head:10001'"]),
    (["logs", "../jobs?x=1", "--address", "http://127.0.0.1:9"], ["JOB", "'../jobs?x=1'"]),
    (["status", "..", "--address", "http://127.0.0.1:9"], ["JOB", "'..'"]),  # /api/jobs/.. is the job list
    (["report", "--dataset", "digits", "--out", "tests"], ["--out", "must be a file", "tests"]),
    (["rank", "--results", "README.md"], ["--results", "README.md is a file"]),
    (["validate", "sweeps/digits.py", "--storage", "README.md"], ["storage='README.md'", "not a folder"]),
    (["query", "SELECT 1", "--results", "no/such/results"], ["--results", "not there", "'no/such/results'"]),
    (["best", "--dataset", "digits", "--results", "no/such/results"], ["--results", "not there"]),
    (["rank", "--results", ""], ["--results: must be a results folder. Received: ''"]),  # the working folder "not there"
    (["rank", "--results", "foo://bucket/results"], ["--results", "'foo://bucket/results'", "s3://"]),
    (["query", "SELECT 1", "--results", "s3://"], ["--results", "bucket"]),
    (["validate", "sweeps/digits.py", "--results", "bogus://x"], ["results='bogus://x'"]),  # without --name too
    (["validate", "sweeps/digits.py", "--dataset", "csv:tests/data/ionosphere.csv?target=a&target=b"],
     ["'target'", "twice"]),
    (["validate", "sweeps/digits.py", "--dataset", "csv:tests/data/ionosphere.csv?target=label&"], ["empty option", "'&'"]),
])
def test_bad_flags_and_parameters_are_one_line(args, words):
    assert_refused(cli(*args), *words)


def test_pictures_into_a_dangling_link_or_a_folder_the_system_refuses_are_one_line(tmp_path):
    """`plot --out` a link to a folder not there, and a picture the system refuses to write
    after the command line's checks (under /proc, which root may write by its permissions),
    were tracebacks (FileExistsError from os.makedirs, FileNotFoundError from savefig)."""
    link = tmp_path / "pictures"
    link.symlink_to(tmp_path / "gone")
    for args in (["plot", "--dataset", "digits"], ["report", "--dataset", "digits"]):
        out = str(link) if args[0] == "plot" else str(link / "r.html")
        assert_refused(cli(*args, "--out", out, "--results", str(tmp_path)), "--out", f"{link} is a link to",
                       "not there")
    rates = " 1  0.1"  # schedule prints its table before it draws
    done = cli("schedule", "step", "initial_lr=0.1", "drop=0.5", "epochs_drop=2", "--epochs", "5", "--plot",
               "/proc/lrsweep-none/rates.png")
    refused(done, "/proc/lrsweep-none/rates.png", stdout=done.stdout)
    if os.geteuid() == 0:  # past the command line's check of write permission: refused as it draws
        assert "Cannot write" in done.stderr and rates in done.stdout


@pytest.mark.parametrize("value", ["ray://head", "head-node"])
@pytest.mark.parametrize("address", [[], ["--address", "auto"]])  # ray.init("auto") reads RAY_ADDRESS too
def test_a_ray_address_in_the_environment_that_launch_cannot_join_is_one_line(value, address):
    done = subprocess.run([sys.executable, "-c", PROBE, "launch", "sweeps/digits.py", *address], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": value})
    assert_refused(done, "RAY_ADDRESS", repr(value), "--address local")


def test_launch_address_auto_where_the_head_ray_start_named_is_gone_is_one_line(tmp_path):
    """A head stopped but by `ray stop` (killed, its container gone) leaves its address in
    Ray's folder, where `--address auto` finds it: ray.init tried to join it for minutes,
    logging. One line now, naming the address, exit 2."""
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses():
        pytest.skip("a Ray runs on this machine, which `auto` may join instead of the address file's (Ray's rule)")
    gone = f"127.0.0.1:{free_port()}"
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(gone)
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", "tests/data", "--address", "auto", "--results",
                   str(tmp_path / "results"), env={"RAY_TMPDIR": str(tmp_path)}, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.startswith(f"lrsweep: error: Argument `address` reaches no Ray cluster: nothing answers at {gone}, "
                           "which `auto` finds on this machine") and line.endswith("Received: address='auto'"), line
    assert not (tmp_path / "results").exists()  # nor the run's folder


def test_launch_address_auto_where_no_ray_runs_is_one_line(tmp_path):
    """`--address auto` with no Ray on this machine printed the sweep's first line, made the
    run's folder in Tune's storage, then said that there was none."""
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses():
        pytest.skip("a Ray runs on this machine, which `auto` joins")
    done = lrsweep("launch", "sweeps/ionosphere.py", "--data-dir", "tests/data", "--address", "auto", "--results",
                   str(tmp_path / "results"), env={"RAY_TMPDIR": str(tmp_path), "RAY_ADDRESS": None}, timeout=120)
    refused(done, "Argument `address` reaches no Ray cluster: `auto` finds none on this machine",
            "Received: address='auto'")
    assert not (tmp_path / "results").exists()  # nor the run's folder


@pytest.mark.parametrize("address, env", [(["--address", "ray://head:10001"], {}),
                                          ([], {"RAY_ADDRESS": "ray://head:10001"})])
def test_validate_takes_the_ray_client_address_a_launch_would_run_through(address, env):
    """Checked as the launch would check it, without connecting: no Ray, no TensorFlow."""
    done = subprocess.run([sys.executable, "-c", PROBE, "validate", "sweeps/digits.py", *address], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sweep digits:") and done.stdout.strip().endswith("imported:")


@pytest.mark.parametrize("value", ["soon", "0"])
def test_a_bad_trainer_idle_time_is_one_line(value):
    done = subprocess.run([sys.executable, "-c", PROBE, "launch", "sweeps/digits.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "LRSWEEP_TRAINER_IDLE_SECONDS": value})
    assert_refused(done, "LRSWEEP_TRAINER_IDLE_SECONDS", repr(value))


def test_a_results_folder_under_a_file_is_refused_before_anything_runs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = cli("launch", "sweeps/digits.py", "--results", str(blocker / "results"))
    assert_refused(done, "a-file")
    assert blocker.read_text() == ""


def test_storage_may_be_a_file_uri_as_ray_takes_it_and_results_may_not(tmp_path):
    """Tune's storage takes any folder pyarrow names by URI; the store's atomic writes need a
    folder or an object store (a file:// store would be written in place)."""
    done = cli("validate", "sweeps/digits.py", "--storage", f"file://{tmp_path}/tune", "--results", str(tmp_path / "r"))
    assert done.returncode == 0 and done.stdout.endswith("imported: \n"), done.stderr[-2000:]
    assert_refused(cli("validate", "sweeps/digits.py", "--results", f"file://{tmp_path}/r"), "results=", "file://")
    from lrsweep import Sweep

    # a folder of this machine, taken as its path: locked, checked and warned of as a folder (as a
    # URI, the multi-node warning and the lock were skipped); a relative one pyarrow refuses
    assert Sweep(name="s", configs=[{"family": "constant", "initial_lr": 0.1}],
                 storage=f"file://{tmp_path}/tune%20a").storage == f"{tmp_path}/tune a"  # decoded, as pyarrow does
    assert_refused(cli("validate", "sweeps/digits.py", "--storage", "file://tune"), "storage='file://tune'",
                   "file:///PATH")


def test_a_results_folder_given_from_home_is_the_one_under_home(tmp_path):
    """--results=~/x (the shell leaves that ~ to the command), or results="~/x" in a sweep
    file, is the folder under the home, as the reading commands take it: not ./~/x."""
    (tmp_path / "a-file").write_text("")
    done = subprocess.run([sys.executable, "-c", PROBE, "validate", "sweeps/digits.py", "--results=~/a-file/results"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert_refused(done, "results", str(tmp_path / "a-file"))
    assert not os.path.exists(os.path.join(REPO, "~"))


def test_a_sweep_file_is_python_whatever_its_name_ends_with(tmp_path):
    done = cli("validate", sweep_file(tmp_path, GOOD, name="mine.sweep"))
    assert done.returncode == 0 and done.stdout.startswith("sweep mine:"), done.stderr


def test_validate_shows_the_resolved_sweep_with_overrides():
    done = cli("validate", "sweeps/digits.py", "--num-samples", "7", "--max-epochs", "9", "--seed", "7")
    assert done.returncode == 0, done.stderr
    assert "7 trials sampled by Optuna TPE (seed 7)" in done.stdout and "up to 9 per trial" in done.stdout
    assert "again with 5 seeds (seeds 8-12)" in done.stdout
    assert "(grace period 2, reduction factor 3: trials judged at epochs 2, 6)" in done.stdout  # ASHA's rungs in 9
    assert "data: 1437 training rows (8x8x1 each), 10 classes, validation: split 0.2 (last 360 of 1797 rows)" in done.stdout
    for label in ("sgd/step", "sgd/cosine", "adam/constant"):
        assert label in done.stdout
    assert done.stdout.strip().endswith("imported:")


@pytest.mark.parametrize("metric, mode, said", [("val_loss", "max", "highest"), ("val_accuracy", "min", "lowest"),
                                               ("loss", "min", None), ("accuracy", "max", None)])
def test_a_mode_against_its_metric_is_run_as_given_with_a_warning(tmp_path, metric, mode, said):
    """mode='max' with a loss would rank the worst schedule first: allowed (the field is the
    user's), and said once, as `validate` and `launch` read the sweep."""
    path = sweep_file(tmp_path, f"""\
        from lrsweep import Sweep
        SWEEP = Sweep(name='m', dataset='digits', metric={metric!r}, mode={mode!r}, max_epochs=2,
                      configs=[{{'family': 'constant', 'initial_lr': 0.1}}])
        """)
    done = cli("validate", path)
    assert done.returncode == 0, done.stderr
    warning = (f"lrsweep: warning: mode={mode!r} with metric={metric!r}: the best trial is the one with the {said} "
               f"{metric} (leave mode out: it follows the metric)")
    assert done.stderr.strip() == (warning if said else "")


def test_a_quick_try_of_a_sweep_file_with_max_epochs_1_is_a_sweep_it_can_run():
    """The README's quick try: the cosine warm-ups of 2 epochs that digits.py allows cannot
    be drawn in a 1-epoch trial, and are left out with a warning, not refused."""
    done = cli("validate", "sweeps/digits.py", "--max-epochs", "1")
    assert done.returncode == 0, done.stderr
    assert "up to 1 per trial" in done.stdout and "warmup_epochs {0}," in done.stdout
    assert done.stderr.strip() == ("lrsweep: warning: max_epochs=1: families['cosine'] draws `warmup_epochs` from "
                                   "{0} instead of {0, 2} (it must be < max_epochs)")


@pytest.mark.parametrize("command", ["validate", "launch", "submit"])
@pytest.mark.parametrize("rows, words", [
    ("a,b,label\n1,2,0\n3,x,1\n", ["line 3", "'b'", "'x'"]),
    ("a,b,label\n1,2,0\n3,4,0\n", ["'label'", "1 class"]),
])
def test_validate_launch_and_submit_refuse_bad_data_in_one_line_before_anything_runs(tmp_path, command, rows, words):
    """What launch would refuse in the data itself is refused before a sweep is run or
    submitted, not only a file that is missing (submit: before it reaches any cluster); the
    quick try's warning (`--max-epochs 1` leaves out digits.py's 2-epoch warm-ups) is not
    given as well: bad input is one line."""
    data = tmp_path / "mine.csv"
    data.write_text(rows)
    done = cli(command, "sweeps/digits.py", "--dataset", f"csv:{data}", "--max-epochs", "1",
               "--results", str(tmp_path / "results"))
    assert_refused(done, str(data), *words)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("resources, words", [
    ({"cpu": 1024}, ["1024 CPUs per trial", "has 2 (this machine's)"]),
    ({"cpu": 1, "gpu": 0.5}, ["0.5 GPUs per trial", "has 0 (this machine's)"]),
])
def test_trials_larger_than_the_ray_a_launch_starts_are_refused_before_it_starts(tmp_path, ray_dir, resources,
                                                                                  words):
    """A trial asking for more CPUs or GPUs than the Ray a launch starts on this machine has
    could never start (one node, nothing to add more): bad input, refused in one line before
    Ray starts (it was refused once Ray had started), counted as Ray counts them as it
    starts (here told by RAY_OVERRIDE_RESOURCES, whatever the machine running the test has)."""
    sweep = tmp_path / "big.py"
    sweep.write_text("from lrsweep import Sweep\nSWEEP = Sweep(name='big', dataset='digits', configs=[{'family': "
                     f"'constant', 'initial_lr': 0.1}}], max_epochs=1, resources={resources!r})\n")
    env = {"RAY_TMPDIR": ray_dir, "RAY_OVERRIDE_RESOURCES": '{"CPU": 2, "GPU": 0}'}
    done = lrsweep("launch", str(sweep), "--results", str(tmp_path / "results"), env=env, timeout=120)
    refused(done, *words, f"resources={resources!r}")
    assert os.listdir(ray_dir) == [], "Ray started"
    assert not (tmp_path / "results").exists()


def _launch_with_failing_download(tmp_path, sweep, ray_dir, **env):
    """`lrsweep launch SWEEP` where the real Keras download of ionosphere fails (from a port
    no server listens on, so that the test does not depend on the machine being offline)."""
    code = ("import sys\nimport lrsweep.data.tables\n"
            "lrsweep.data.tables.IONOSPHERE_URL = 'http://127.0.0.1:9/ionosphere.data'\n"
            "from lrsweep.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, "launch", str(sweep), "--results", str(tmp_path / "results")],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "RAY_TMPDIR": ray_dir, **env})


def test_a_launch_whose_download_fails_says_so_in_one_line_before_ray_starts(tmp_path, ray_dir):
    """The download fails: one line on stderr, TensorFlow's start-up lines (which Keras'
    import brings) kept out, nothing stored, Ray not started."""
    done = _launch_with_failing_download(tmp_path, "sweeps/ionosphere.py", ray_dir)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrsweep: error: Could not download dataset ionosphere"), lines
    assert os.listdir(ray_dir) == [], "Ray started"
    assert not (tmp_path / "results").exists()


def test_trials_larger_than_the_machine_are_refused_before_the_data_is_downloaded(tmp_path, ray_dir):
    """A launch that could never start a trial says so before it downloads its dataset
    (minutes for a large one), not after."""
    sweep = tmp_path / "big.py"
    sweep.write_text("from lrsweep import Sweep\nSWEEP = Sweep(name='big', dataset='ionosphere', configs=[{'family': "
                     "'constant', 'initial_lr': 0.1}], max_epochs=1, resources={'cpu': 4})\n")
    done = _launch_with_failing_download(tmp_path, sweep, ray_dir, RAY_OVERRIDE_RESOURCES='{"CPU": 2, "GPU": 0}')
    refused(done, "asks for 4 CPUs per trial", "resources={'cpu': 4}")
    assert os.listdir(ray_dir) == [], "Ray started"
    assert not (tmp_path / "results").exists()


def test_start_up_lines_are_kept_quiet_but_not_what_a_failing_import_said(tmp_path):
    """TensorFlow's start-up lines go to file descriptor 2 from C++, and lrsweep silences them
    as it imports (`quiet.quiet_stderr`); an import that fails there has often written why
    (NumPy's ABI, a missing library) before it raised, and that still reaches the user. A
    Ctrl-C during the import (raised here where SIGINT would raise it) is no failure of it:
    its lines stay quiet."""
    (tmp_path / "chatty.py").write_text("import os\nos.write(2, b'I0000 start-up line\\n')\n")
    (tmp_path / "stopped.py").write_text("import os\nos.write(2, b'I0000 another start-up line\\n')\n"
                                         "raise KeyboardInterrupt\n")
    (tmp_path / "broken.py").write_text("import os\nos.write(2, b'compiled against another NumPy\\n')\n"
                                        "raise ImportError('numpy.core.multiarray failed to import')\n")
    code = ("from lrsweep.quiet import quiet_stderr\nwith quiet_stderr():\n    import chatty\ntry:\n"
            "    with quiet_stderr():\n        import stopped\nexcept KeyboardInterrupt:\n    pass\n"
            "with quiet_stderr():\n    import broken\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1
    assert "start-up line" not in done.stderr
    assert "compiled against another NumPy" in done.stderr and "failed to import" in done.stderr


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """`lrsweep query ... | head` (or `schedule --csv`, `best`): the reader closes the pipe,
    and the command ended in a BrokenPipeError traceback; it stops quietly with the status a
    process SIGPIPE ends has, 141, as `cat` would."""
    command = subprocess.Popen([sys.executable, "-m", "lrsweep", "query", "SELECT range AS n FROM range(1000000)",
                                "--format", "csv", "--results", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert command.stdout.readline() == "n\n"
    command.stdout.close()
    assert command.wait(timeout=120) == 141
    assert command.stderr.read() == ""


def test_validate_does_not_download_a_dataset(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, "validate", "sweeps/cifar.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "KERAS_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "data: not here yet; launch downloads it" in done.stdout and done.stdout.strip().endswith("imported:")
    assert list(tmp_path.iterdir()) == []


def test_validate_shows_the_rungs_of_budget_early_stopping(tmp_path):
    path = sweep_file(tmp_path, """
        from lrsweep import Range, Sweep
        SWEEP = Sweep(name="fair", dataset="digits", max_epochs=27, num_samples=27, early_stopping="budget",
                      families={"step": {"initial_lr": Range(0.01, 0.5, log=True), "drop": 0.5, "epochs_drop": 9}})
    """)
    done = cli("validate", path)
    assert done.returncode == 0, done.stderr
    assert "successive halving from scratch" in done.stdout
    assert "27 x 1, then 9 x 3, then 3 x 9, then 1 x 27" in done.stdout


@pytest.mark.parametrize("family, params, rates", [("constant", ["initial_lr=0.1"], [0.1, 0.1, 0.1]),
                                                  ("plateau", ["initial_lr=0.1", "patience=1"], [0.1, 0.1, 0.01])])
def test_a_rate_fixed_within_each_epoch_previews_per_step_without_steps_per_epoch(family, params, rates):
    """constant and plateau rates move (if at all) between epochs: --granularity step shows
    them as they are, without asking how many steps an epoch has."""
    done = lrsweep("schedule", family, *params, "--epochs", "3", "--granularity", "step", "--csv", timeout=120)
    assert done.returncode == 0, done.stderr
    assert [round(float(r["lr"]), 6) for r in csv.DictReader(io.StringIO(done.stdout))] == rates


def test_schedule_prints_csv_and_draws_a_png(tmp_path):
    png = tmp_path / "pictures" / "step.png"  # a folder it makes
    done = subprocess.run([sys.executable, "-m", "lrsweep", "schedule", "step", "initial_lr=0.1", "drop=0.5",
                           "epochs_drop=2", "--epochs", "6", "--csv", "--plot", str(png)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [float(r["lr"]) for r in rows] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
