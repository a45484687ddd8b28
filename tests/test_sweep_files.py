"""The sweep files in sweeps/, as a user runs them: each validates, and the image sweeps
start and train from local copies in the datasets' original formats."""

import os

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, lrsweep
from tests.formats import cifar_batches, mnist_arrays, write_cifar_archive, write_csv, write_idx_set

SWEEPS = sorted(f for f in os.listdir(os.path.join(REPO, "sweeps")) if f.endswith(".py"))


def test_the_four_sweep_files_of_the_spec_exist():
    assert SWEEPS == ["cifar.py", "digits.py", "fashion_mnist.py", "ionosphere.py"]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_file_validates_and_shows_what_it_runs(sweep):
    done = lrsweep("validate", f"sweeps/{sweep}", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "families:" in done.stdout and "trials" in done.stdout


def launch_small(sweep, data_dir_or_dataset, results, address, *extra):
    done = lrsweep("launch", f"sweeps/{sweep}", *data_dir_or_dataset, "--num-samples", "2", "--max-epochs", "3",
                   "--confirm-seeds", "0", "--results", str(results), "--address", address, *extra,
                   env={"RAY_AUTH_MODE": None})  # a shell that never heard of it: lrsweep finds the token
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_parquet(results / "trials"), pd.read_parquet(results / "epochs")


def test_fashion_mnist_sweep_trains_from_the_original_idx_files(ray_session, tmp_path):
    # 20,000 training images: the sweep's subsample; its validation is the test set
    write_idx_set(tmp_path / "data", mnist_arrays(n_train=20_000, n_test=500))
    trials, epochs = launch_small("fashion_mnist.py", ["--data-dir", str(tmp_path / "data")], tmp_path / "r",
                                  ray_session)
    assert len(trials) == 2 and (trials["dataset"] == "fashion_mnist").all()
    assert (trials["steps_per_epoch"] == 20_000 // 64 + 1).all()
    assert epochs["val_accuracy"].notna().all()


def test_cifar_sweep_trains_from_the_original_archive(ray_session, tmp_path):
    (tmp_path / "data").mkdir()
    write_cifar_archive(tmp_path / "data" / "cifar-10-python.tar.gz", cifar_batches(n_per_batch=60, n_test=50))
    trials, epochs = launch_small("cifar.py", ["--data-dir", str(tmp_path / "data")], tmp_path / "r", ray_session)
    assert len(trials) == 2 and (trials["dataset"] == "cifar10").all() and (trials["model"] == "cnn").all()
    assert (trials["steps_per_epoch"] == 300 // 64 + 1).all()


def test_a_users_csv_sweeps_with_one_flag(ray_session, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    label = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    csv = write_csv(tmp_path / "mine.csv", ["a", "b", "c", "d", "e", "label"],
                    [[*map(float, row), y] for row, y in zip(x, label)])
    trials, _ = launch_small("digits.py", ["--dataset", f"csv:{csv}"], tmp_path / "r", ray_session)
    assert (trials["dataset"] == "mine").all()
    assert (trials["dataset_source"] == str(csv)).all()
    assert trials["final_val_accuracy"].max() > 0.6  # a learnable rule, learnt
