"""lrsweep.data: every loader on small files written in the dataset's original format."""

import csv
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrsweep.data import DATASETS, Dataset, DatasetRef, check_dataset, images, load_dataset
from lrsweep.errors import LrsweepError
from tests.formats import (IDX_NAMES, cifar_batches, idx_bytes, mnist_arrays, write_cifar_archive,
                           write_cifar_folder, write_csv, write_gz, write_idx_set)

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
def ionosphere_rows():
    with open(TEST_DATA / "ionosphere.csv", newline="") as f:
        return [row for row in csv.reader(f) if row]


def raises(match, call, *args, **kwargs):
    """The LrsweepError `call` raises, checked to be one line and to match `match`."""
    with pytest.raises(LrsweepError, match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture(autouse=True)
def no_keras(monkeypatch, tmp_path_factory):
    """Keep tests off the real Keras cache and off Keras itself: `import keras` fails."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
    monkeypatch.setitem(sys.modules, "keras", None)


# --- the real ionosphere file ----------------------------------------------------------

def test_ionosphere_real_file():
    data = load_dataset("ionosphere", data_dir=str(TEST_DATA), validation_split=0.33)
    rows = ionosphere_rows()
    assert len(rows) == 351 and all(len(r) == 35 for r in rows)
    assert (data.name, data.source, data.kind, data.task) == ("ionosphere", "ionosphere", "table", "binary")
    assert data.classes == ["b", "g"] and data.num_classes == 2
    assert data.x_train.shape == (235, 34) and data.x_val.shape == (116, 34)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.input_shape == (34,)
    assert data.validation == "split 0.33 (last 116 of 351 rows)"
    labels = np.concatenate([data.y_train, data.y_val])
    assert (labels == 0).sum() == 126 and (labels == 1).sum() == 225
    # auto is "none" for ionosphere: the validation rows are the file's last 116, unchanged.
    expected = np.array([[float(v) for v in r[:34]] for r in rows[-116:]], dtype=np.float32)
    np.testing.assert_array_equal(data.x_val, expected)
    np.testing.assert_array_equal(data.y_val, [{"b": 0, "g": 1}[r[34]] for r in rows[-116:]])


def test_data_dir_with_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ionosphere.csv").write_bytes((TEST_DATA / "ionosphere.csv").read_bytes())
    assert len(load_dataset("ionosphere", data_dir="~").x_train) == 280


def test_ionosphere_under_its_uci_name(tmp_path):
    (tmp_path / "ionosphere.data").write_bytes((TEST_DATA / "ionosphere.csv").read_bytes())
    data = load_dataset("ionosphere", data_dir=str(tmp_path))
    assert len(data.x_train) + len(data.x_val) == 351


def test_ionosphere_has_no_test_split():
    raises("no test split.*validation_split=None", load_dataset, "ionosphere",
           data_dir=str(TEST_DATA), validation_split=None)


def test_ionosphere_bad_label(tmp_path):
    rows = ionosphere_rows()[:10]
    rows[3][-1] = "x"
    write_csv(tmp_path / "ionosphere.csv", rows[0], rows[1:])
    raises(r"ionosphere.csv line 4 has the label 'x'", load_dataset, "ionosphere", data_dir=str(tmp_path))


# --- images ----------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["scikit-learn's file", "scikit-learn"])
def test_digits(where, monkeypatch):
    from sklearn.datasets import load_digits

    raw = load_digits()
    if where == "scikit-learn":  # the file has moved in some release: loaded through scikit-learn
        monkeypatch.setattr(images, "DIGITS_FILE", ("no", "such", "digits.csv.gz"))
    data = load_dataset("digits")
    assert data.x_train.shape == (1437, 8, 8, 1) and data.x_val.shape == (360, 8, 8, 1)
    assert data.kind == "image" and data.task == "multiclass" and data.num_classes == 10
    assert data.classes == [str(d) for d in range(10)]
    # unit scaling of digits divides by 16, the format's maximum.
    np.testing.assert_array_equal(data.x_train.reshape(1437, 64), (raw.data[:1437] / 16).astype(np.float32))
    np.testing.assert_array_equal(data.y_val, raw.target[1437:])
    raises("digits has no test split", load_dataset, "digits", validation_split=None)


def test_digits_load_without_scikit_learn():
    """A digits sweep starts without importing scikit-learn, which took 0.8 s."""
    probe = ("import sys; from lrsweep.data import load_dataset; load_dataset('digits'); "
             "print('sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("layout", ["idx", "keras_npz"])
def test_mnist(tmp_path, layout):
    x, y, x_test, y_test = mnist_arrays()
    if layout == "idx":
        write_idx_set(tmp_path, (x, y, x_test, y_test))
    else:
        np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    data = load_dataset("mnist", data_dir=str(tmp_path), validation_split=None)
    assert data.x_train.shape == (300, 28, 28, 1) and data.x_val.shape == (100, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.validation == "test split (100 rows)"
    assert data.classes == [str(d) for d in range(10)] and data.input_shape == (28, 28, 1)
    np.testing.assert_array_equal(data.x_train[..., 0], x.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(data.x_val[..., 0], x_test.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(data.y_train, y)
    np.testing.assert_array_equal(data.y_val, y_test)


@pytest.mark.parametrize("subfolder", ["", "fashion-mnist"])
def test_fashion_mnist(tmp_path, subfolder):
    x, y, x_test, y_test = mnist_arrays(seed=3)
    write_idx_set(tmp_path / subfolder, (x, y, x_test, y_test))
    data = load_dataset("fashion_mnist", data_dir=str(tmp_path), scale="none")
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.x_train.shape == (240, 28, 28, 1) and data.validation == "split 0.2 (last 60 of 300 rows)"
    np.testing.assert_array_equal(data.x_train[..., 0], x[:240])


@pytest.mark.parametrize("layout", ["cifar-10-batches-py", "folder itself", "keras cache", "archive"])
def test_cifar10(tmp_path, layout):
    batches = cifar_batches()
    if layout == "archive":
        write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    else:
        folder = {"cifar-10-batches-py": tmp_path / "cifar-10-batches-py", "folder itself": tmp_path,
                  "keras cache": tmp_path / "cifar-10-batches-py-target" / "cifar-10-batches-py"}[layout]
        write_cifar_folder(folder, batches)
    data = load_dataset("cifar10", data_dir=str(tmp_path), validation_split=None, scale="none")
    assert data.x_train.shape == (200, 32, 32, 3) and data.x_val.shape == (30, 32, 32, 3)
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    np.testing.assert_array_equal(data.y_train, sum((b[b"labels"] for b in train), []))
    # Channels last: pixel (row, col) of channel ch is byte ch*1024 + row*32 + col.
    raw = batches["data_batch_2"][b"data"]
    for i, row, col, ch in [(0, 0, 0, 0), (3, 5, 7, 1), (39, 31, 31, 2)]:
        assert data.x_train[40 + i, row, col, ch] == raw[i, ch * 1024 + row * 32 + col]


@pytest.mark.parametrize("written", ["pickled by Python 3 (protocol 5)", "archived as ./cifar-10-batches-py"])
def test_cifar10_as_other_tools_write_it(tmp_path, written):
    """Batches a user pickled again with Python 3's newest protocol (numpy then rebuilds
    arrays with `_frombuffer`), and an archive `tar czf x ./cifar-10-batches-py` made: Keras
    reads both, and so does lrsweep."""
    batches = cifar_batches(n_per_batch=3, n_test=2)
    if written.startswith("pickled"):
        write_cifar_folder(tmp_path / "cifar-10-batches-py", batches, protocol=5)
    else:
        write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches, prefix="./")
    data = load_dataset("cifar10", data_dir=str(tmp_path), validation_split=None, scale="none")
    np.testing.assert_array_equal(data.x_val.transpose(0, 3, 1, 2).reshape(2, 3072),
                                  batches["test_batch"][b"data"])
    assert data.x_train.shape == (15, 32, 32, 3)


def test_cifar_pickled_by_numpy_1(tmp_path):
    """The original batches name numpy.core.multiarray, numpy 2's numpy._core under its old name."""
    batches = cifar_batches(n_per_batch=2, n_test=2)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_folder(folder, batches)
    for path in folder.iterdir():
        raw = path.read_bytes()
        assert b"numpy._core.multiarray" in raw
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    data = load_dataset("cifar10", data_dir=str(tmp_path), validation_split=None, scale="none")
    np.testing.assert_array_equal(data.x_val.transpose(0, 3, 1, 2).reshape(2, 3072),
                                  batches["test_batch"][b"data"])


# --- corrupt files ---------------------------------------------------------------------

def test_truncated_idx(tmp_path):
    write_idx_set(tmp_path, mnist_arrays())
    path = tmp_path / IDX_NAMES[0]
    write_gz(path, idx_bytes(mnist_arrays()[0])[:-100])
    message = raises("is truncated", load_dataset, "mnist", data_dir=str(tmp_path))
    assert message == (f"Dataset file {path} is truncated: 235100 bytes of data, "
                       "expected 235200 for shape (300, 28, 28)")


def test_truncated_gzip_stream(tmp_path):
    write_idx_set(tmp_path, mnist_arrays())
    path = tmp_path / IDX_NAMES[2]
    path.write_bytes(path.read_bytes()[:500])
    message = raises("cannot be read", load_dataset, "mnist", data_dir=str(tmp_path))
    assert message.startswith(f"Dataset file {path} cannot be read: ")


def test_bad_idx_magic(tmp_path):
    arrays = mnist_arrays()
    write_idx_set(tmp_path, arrays)
    path = tmp_path / IDX_NAMES[1]
    write_gz(path, b"\x00\x00\x12\x34" + idx_bytes(arrays[1])[4:])
    message = raises("is not an IDX file", load_dataset, "mnist", data_dir=str(tmp_path))
    assert message == (f"Dataset file {path} is not an IDX file: magic number 0x00001234, "
                       "expected 0x00000801")


def test_idx_counts_disagree(tmp_path):
    x, y, x_test, y_test = mnist_arrays()
    write_idx_set(tmp_path, (x, y[:-1], x_test, y_test))
    raises("disagree: 300 images, 299 labels", load_dataset, "mnist", data_dir=str(tmp_path))


def test_truncated_cifar_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_folder(folder, cifar_batches())
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    message = raises("not a readable CIFAR-10 batch", load_dataset, "cifar10", data_dir=str(tmp_path))
    assert message.startswith(f"Dataset file {path} is not a readable CIFAR-10 batch: ")


def test_cifar_pickle_cannot_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_folder(folder, cifar_batches())
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}))
    raises(r"test_batch is not a readable CIFAR-10 batch: UnpicklingError: refusing to load builtins.print",
           load_dataset, "cifar10", data_dir=str(tmp_path))


def test_truncated_cifar_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(path, cifar_batches())
    path.write_bytes(path.read_bytes()[:5000])
    message = raises("not a readable tar.gz archive", load_dataset, "cifar10", data_dir=str(tmp_path))
    assert message.startswith(f"Dataset file {path} is not a readable tar.gz archive: ")


def test_cifar_archive_without_a_batch(tmp_path):
    batches = cifar_batches()
    del batches["test_batch"]
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    raises("lacks cifar-10-batches-py/test_batch", load_dataset, "cifar10", data_dir=str(tmp_path))


# --- csv: and npz: ---------------------------------------------------------------------

def test_csv_string_labels(tmp_path):
    path = write_csv(tmp_path / "pets.csv", ["a", "b", "kind"],
                     [[1, 2, "dog"], [3, 4, "cat"], [5, 6, "bird"], [7, 8, "cat"], [9, 10, "dog"]])
    data = load_dataset(f"csv:{path}", scale="none", validation_split=0.4)
    assert (data.name, data.source, data.kind) == ("pets", str(path), "table")
    assert data.classes == ["bird", "cat", "dog"] and data.task == "multiclass"
    np.testing.assert_array_equal(data.y_train, [2, 1, 0])
    np.testing.assert_array_equal(data.y_val, [1, 2])
    np.testing.assert_array_equal(data.x_val, [[7, 8], [9, 10]])


def test_a_csv_without_a_header_row_is_warned_of(tmp_path, capsys):
    """The UCI ionosphere file as `csv:` has no header: its first row, read as the header,
    is lost to training, and the user is told so. A header of numbers that is not data
    (pandas' own 0, 1, 2, ...; a class that is no label) is not warned of."""
    capsys.readouterr()
    data = load_dataset(f"csv:{TEST_DATA / 'ionosphere.csv'}", validation_split=0.33)
    assert len(data.x_train) + len(data.x_val) == 350
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and str(TEST_DATA / "ionosphere.csv") in warning, warning
    assert "the class 'g'" in warning and "no header row" in warning
    rows = [[0.5, 0.25, 1], [0.75, 0.5, 0], [0.25, 0.5, 1], [0.5, 0.75, 0]] * 2
    for name, header in [("pandas.csv", ["0", "1", "2"]), ("waves.csv", ["400", "410", "7"]),
                         ("named.csv", ["a", "b", "label"])]:
        load_dataset(f"csv:{write_csv(tmp_path / name, header, rows)}", validation_split=0.5)
    assert capsys.readouterr().err == ""
    load_dataset(f"csv:{write_csv(tmp_path / 'bare.csv', ['0.5', '0.25', '1'], rows)}", validation_split=0.5)
    assert "bare.csv: its first row (0.5,0.25,1) is taken as the header" in capsys.readouterr().err


def test_the_index_pandas_to_csv_writes_is_not_trained_on(tmp_path, capsys):
    """`DataFrame.to_csv(path)` writes the index first, its name empty: it was a feature, the
    row number (on a file sorted by label, the label itself), and nothing said so."""
    import pandas as pd

    frame = pd.DataFrame({"f1": [0.5, 0.75, 0.25, 0.5] * 2, "f2": [0.25, 0.5, 0.5, 0.75] * 2, "label": [1, 0] * 4})
    frame.to_csv(tmp_path / "saved.csv")
    capsys.readouterr()
    data = load_dataset(f"csv:{tmp_path / 'saved.csv'}", validation_split=0.5, scale="none")
    np.testing.assert_array_equal(data.x_train, frame[["f1", "f2"]].to_numpy()[:4])
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "saved.csv: its first column has no name" in warning, warning
    frame.to_csv(tmp_path / "plain.csv", index=False)
    assert load_dataset(f"csv:{tmp_path / 'plain.csv'}", validation_split=0.5).x_train.shape == (4, 2)
    assert capsys.readouterr().err == ""
    frame[["label"]].to_csv(tmp_path / "no-features.csv")
    raises("no feature column", load_dataset, f"csv:{tmp_path / 'no-features.csv'}")
    # a first column that is no index of rows (not whole numbers, or a name of blanks): a feature
    for name, header, first in (("measured.csv", ["", "f", "label"], 0.5), ("blank.csv", [" ", "f", "label"], 3)):
        rows = [[first + i, 0.25 * i, i % 2] for i in range(8)]
        data = load_dataset(f"csv:{write_csv(tmp_path / name, header, rows)}", validation_split=0.5)
        assert data.x_train.shape == (4, 2)
    assert capsys.readouterr().err == ""


def test_csv_target_and_integer_labels(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["f1", "label", "f2"],
                     [[0.5, 10, 1], [1.5, 2, 2], [2.5, 1, 3], [3.5, 2, 4]])
    data = load_dataset(f"csv:{path}?target=label", scale="none", validation_split=0.5)
    # Integer labels sort as numbers, not as text ("10" < "2").
    assert data.classes == ["1", "2", "10"]
    np.testing.assert_array_equal(data.y_train, [2, 1])
    np.testing.assert_array_equal(data.x_train, [[0.5, 1], [1.5, 2]])
    assert data.source == f"{path}?target=label" and data.name == "t"


def test_csv_bad_cells(tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["f1", "f2", "y"], [[1, 2, 0], [3, "abc", 1]])
    raises(r"bad.csv line 3 column 'f2' holds 'abc', not a finite number", load_dataset, f"csv:{path}")
    path = write_csv(tmp_path / "frac.csv", ["f1", "y"], [[1, 0.5], [2, 1]])
    raises(r"column 'y' holds the label 0.5, which is not a class", load_dataset, f"csv:{path}")
    path = write_csv(tmp_path / "ragged.csv", ["f1", "y"], [[1, 0], [2, 1, 3]])
    raises(r"ragged.csv line 3 has 3 columns, expected 2", load_dataset, f"csv:{path}")
    path = write_csv(tmp_path / "one.csv", ["f1", "y"], [[1, "a"], [2, "a"]])
    raises(r"has 1 class \(a\): a classifier needs at least 2", load_dataset, f"csv:{path}")
    raises(r"no column target='nope'. Its columns: f1, y", load_dataset, f"csv:{path}?target=nope")
    path = write_csv(tmp_path / "blank.csv", ["f1", "y"], [[1, "a"], [2, ""], [3, "b"]])
    raises(r"blank.csv line 3 has no label in column 'y'", load_dataset, f"csv:{path}")


def test_npz_with_x_val(tmp_path):
    rng = np.random.default_rng(0)
    x, x_val = rng.normal(size=(50, 4)), rng.normal(size=(20, 4))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(50) % 3, x_val=x_val, y_val=np.arange(20) % 3)
    spec = f"npz:{tmp_path / 'd.npz'}"
    assert check_dataset(spec).kind == "table" and check_dataset(spec).test_split
    data = load_dataset(spec, validation_split=None)
    assert data.validation == "x_val/y_val (20 rows)" and data.num_classes == 3
    # auto is "none" for npz.
    np.testing.assert_array_equal(data.x_val, x_val.astype(np.float32))
    np.testing.assert_array_equal(data.y_val, np.arange(20) % 3)


def test_npz_images_without_x_val(tmp_path):
    np.savez(tmp_path / "img.npz", x=np.zeros((30, 5, 6), np.uint8), y=np.arange(30) % 2)
    spec = f"npz:{tmp_path / 'img.npz'}"
    assert check_dataset(spec) == DatasetRef(spec, "img", str(tmp_path / "img.npz"), "image")
    data = load_dataset(spec)
    assert data.kind == "image" and data.input_shape == (5, 6, 1) and data.task == "binary"
    raises("img has no test split", load_dataset, spec, validation_split=None)


def test_npz_bad_contents(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 2)), y=np.zeros(4), x_val=np.zeros((2, 2)))
    raises("both x_val and y_val or neither. It holds: x, x_val, y", load_dataset, f"npz:{tmp_path / 'a.npz'}")
    np.savez(tmp_path / "b.npz", features=np.zeros((4, 2)))
    raises("holds no array x", check_dataset, f"npz:{tmp_path / 'b.npz'}")
    x = np.zeros((5, 2, 2))
    x[3, 1, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(5) % 2)
    raises(r"nan.npz array x holds nan in row 3: features must be finite numbers", load_dataset,
           f"npz:{tmp_path / 'nan.npz'}")
    np.savez(tmp_path / "inf.npz", x=np.zeros((4, 2)), y=np.arange(4) % 2, x_val=np.full((2, 2), -np.inf),
             y_val=np.arange(2))
    raises(r"inf.npz array x_val holds -inf in row 0", load_dataset, f"npz:{tmp_path / 'inf.npz'}")
    np.savez(tmp_path / "mixed.npz", x=np.zeros((6, 2)), y=np.array(list("abcabc")), x_val=np.zeros((3, 2)),
             y_val=np.arange(3))  # 0 in y_val would be a class of its own, beside y's 'a'
    raises(r"mixed.npz arrays y and y_val must hold labels of one kind", load_dataset,
           f"npz:{tmp_path / 'mixed.npz'}", validation_split=None)
    np.savez(tmp_path / "same.npz", x=np.zeros((6, 2)), y=np.array(list("012012")), x_val=np.zeros((3, 2)),
             y_val=np.arange(3))  # the same classes written two ways: '1' and 1 are one
    assert load_dataset(f"npz:{tmp_path / 'same.npz'}", validation_split=None).classes == ["0", "1", "2"]
    np.savez(tmp_path / "none.npz", x=np.zeros((6, 0)), y=np.arange(6) % 2)
    raises(r"none.npz array x must be numbers of shape .* shape \(6, 0\)", load_dataset, f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    raises(r"c.npz is not a readable .npz file", check_dataset, f"npz:{tmp_path / 'c.npz'}")
    # no training rows beside its own validation rows: an IndexError's traceback
    np.savez(tmp_path / "x0.npz", x=np.zeros((0, 4)), y=np.zeros(0, int), x_val=np.zeros((4, 4)), y_val=np.arange(4) % 2)
    raises(r"Dataset x0 has no training rows. Received: dataset='npz:.*x0.npz'", load_dataset,
           f"npz:{tmp_path / 'x0.npz'}", validation_split=None)
    # validation rows that hold none: Keras reports no val_* metrics, and every trial ended diverged
    np.savez(tmp_path / "v0.npz", x=np.zeros((6, 2)), y=np.arange(6) % 2, x_val=np.zeros((0, 2)), y_val=np.zeros(0, int))
    raises(r"Dataset v0's x_val/y_val holds no rows to validate on.*Received: validation_split=None", load_dataset,
           f"npz:{tmp_path / 'v0.npz'}", validation_split=None)


# --- subsample, split, scale -----------------------------------------------------------

@pytest.fixture
def numbered_csv(tmp_path):
    """200 rows whose feature `id` is the row's index in the file."""
    return write_csv(tmp_path / "numbered.csv", ["id", "y"], [[i, "ab"[i % 2]] for i in range(200)])


def rows_of(data):
    return np.concatenate([data.x_train[:, 0], data.x_val[:, 0]]).astype(int)


def test_subsample_rule(numbered_csv):
    spec = f"csv:{numbered_csv}"
    data = load_dataset(spec, subsample=50, seed=7, scale="none", validation_split=0.2)
    expected = np.sort(np.random.default_rng(7).choice(200, size=50, replace=False))
    np.testing.assert_array_equal(rows_of(data), expected)
    # Subsample first, then the split holds out the last 10 of the 50 rows drawn.
    np.testing.assert_array_equal(data.x_val[:, 0], expected[40:])
    assert data.validation == "split 0.2 (last 10 of 50 rows)"
    assert np.array_equal(rows_of(load_dataset(spec, subsample=50, seed=7, scale="none")), expected)
    assert not np.array_equal(rows_of(load_dataset(spec, subsample=50, seed=8, scale="none")), expected)
    raises(r"`subsample` must be at most the 200 training rows of numbered. Received: subsample=201",
           load_dataset, spec, subsample=201)
    raises(r"Received: subsample=0", load_dataset, spec, subsample=0)


def test_test_split_is_not_subsampled(tmp_path):
    write_idx_set(tmp_path, mnist_arrays())
    data = load_dataset("mnist", data_dir=str(tmp_path), subsample=40, validation_split=None)
    assert len(data.x_train) == 40 and len(data.x_val) == 100


@pytest.mark.parametrize("n, fraction, train", [(200, 0.2, 160), (10, 0.25, 7), (100, 0.33, 67), (7, 0.5, 3)])
def test_split_rule(numbered_csv, n, fraction, train):
    """floor(n * (1 - f)) rows train, as in Keras' train_validation_split."""
    data = load_dataset(f"csv:{numbered_csv}", subsample=n, scale="none", validation_split=fraction)
    assert train == math.floor(n * (1 - fraction)) and len(data.x_train) == train
    np.testing.assert_array_equal(rows_of(data)[train:], data.x_val[:, 0])


def test_a_split_that_leaves_training_one_class_is_refused_and_one_class_short_warned(tmp_path, capsys):
    """A file sorted by label: the last rows held out for validation are the last class, and
    every trial would train on the others (one class: nothing to learn at all). The same for
    an npz whose labels are all one class, which its classes list did not show."""
    path = write_csv(tmp_path / "sorted.csv", ["f1", "y"], [[i, "x"] for i in range(8)] + [[8, "y"], [9, "y"]])
    raises(r"sorted's 8 training rows hold one class \(x\) once its last 2 are held out for validation \(rows "
           r"keep the file's order: shuffle a file sorted by label\): .* Received: validation_split=0.2",
           load_dataset, f"csv:{path}", validation_split=0.2)
    path = write_csv(tmp_path / "three.csv", ["f1", "y"], [[i, label] for i, label in enumerate("aaaabbbbccc")])
    capsys.readouterr()
    data = load_dataset(f"csv:{path}", validation_split=0.25)
    assert len(data.x_train) == 8 and data.num_classes == 3
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "1 class(es) that its training rows do not (c)" in warning
    np.savez(tmp_path / "zeros.npz", x=np.zeros((6, 2)), y=np.zeros(6), x_val=np.zeros((2, 2)), y_val=np.ones(2))
    raises(r"zeros's 6 training rows hold one class \(0\): .* Received: validation_split=None", load_dataset,
           f"npz:{tmp_path / 'zeros.npz'}", validation_split=None)


def test_split_too_small_and_bad(numbered_csv):
    spec = f"csv:{numbered_csv}"
    raises(r"2 training rows, too few.*validation_split=0.6", load_dataset, spec, subsample=2, validation_split=0.6)
    for bad in (0, 1, 1.5, -0.2, "0.2", True):
        raises(rf"`validation_split` must be .* Received: validation_split={bad!r}",
               load_dataset, spec, validation_split=bad)


def test_scales(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["a", "b", "c", "y"],
                     [[1, -4, 7, "p"], [2, 0, 7, "q"], [3, 2, 7, "p"], [10, 100, 5, "q"]])
    spec = f"csv:{path}"

    def load(scale):
        return load_dataset(spec, scale=scale, validation_split=0.25)

    none = load("none")
    np.testing.assert_array_equal(none.x_train, [[1, -4, 7], [2, 0, 7], [3, 2, 7]])
    np.testing.assert_array_equal(none.x_val, [[10, 100, 5]])
    # unit: the largest absolute training value is 7; the validation row does not count.
    unit = load("unit")
    np.testing.assert_array_equal(unit.x_train, np.float32([[1, -4, 7], [2, 0, 7], [3, 2, 7]]) / np.float32(7))
    np.testing.assert_array_equal(unit.x_val, np.float32([[10, 100, 5]]) / np.float32(7))
    # standard: training mean (2, -2/3, 7), population std (sqrt(2/3), sqrt(56/9), 0 -> 1).
    standard = load("standard")
    mean, std = np.array([2, -2 / 3, 7]), np.array([math.sqrt(2 / 3), math.sqrt(56 / 9), 1])
    np.testing.assert_allclose(standard.x_train, (none.x_train - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(standard.x_train[:, 0], [-math.sqrt(1.5), 0, math.sqrt(1.5)], rtol=1e-6)
    np.testing.assert_allclose(standard.x_val, [[8 / math.sqrt(2 / 3), (100 + 2 / 3) / math.sqrt(56 / 9), -2]],
                               rtol=1e-6)
    assert standard.x_train.dtype == np.float32
    # auto is "standard" for csv.
    np.testing.assert_array_equal(load("auto").x_train, standard.x_train)
    raises(r"`scale` must be one of auto, none, unit, standard. Received: scale='minmax'", load, "minmax")


def test_auto_scale_of_images_is_unit(tmp_path):
    x, y, x_test, y_test = mnist_arrays()
    write_idx_set(tmp_path, (x, y, x_test, y_test))
    auto = load_dataset("mnist", data_dir=str(tmp_path), validation_split=None)
    unit = load_dataset("mnist", data_dir=str(tmp_path), validation_split=None, scale="unit")
    np.testing.assert_array_equal(auto.x_train, unit.x_train)
    standard = load_dataset("mnist", data_dir=str(tmp_path), validation_split=None, scale="standard")
    pixels = x.reshape(300, 784).astype(np.float64)
    std = pixels.std(axis=0)
    std[std == 0] = 1
    np.testing.assert_allclose(standard.x_train.reshape(300, 784), (pixels - pixels.mean(axis=0)) / std,
                               rtol=1e-5, atol=1e-5)


# --- check_dataset ---------------------------------------------------------------------

def test_check_dataset_names():
    assert DATASETS == ("digits", "cifar10", "fashion_mnist", "mnist", "ionosphere")
    assert check_dataset("mnist") == DatasetRef("mnist", "mnist", "mnist", "image", test_split=True)
    assert check_dataset("ionosphere", str(TEST_DATA)).kind == "table"
    message = raises("Unknown dataset", check_dataset, "foo")
    assert message == ("Unknown dataset: 'foo'. Valid names: digits, cifar10, fashion_mnist, mnist, "
                       "ionosphere, or csv:PATH, npz:PATH")
    raises("Unknown dataset: 'tsv:x.tsv'", check_dataset, "tsv:x.tsv")


def test_a_dataset_file_whose_name_makes_too_long_a_results_folder_is_refused_before_training(tmp_path):
    """The results folder is named after the file, URI-encoded (nine bytes a CJK character):
    a 29-character Japanese name passed `validate`, then `find-lr` trained and failed on
    writing its rows (a traceback), as a launch would after its trials."""
    long_name = tmp_path / ("電離層レーダー反射データ_良否分類_学習用データセット_最終版" + ".csv")
    write_csv(long_name, ["a", "y"], [[1, 0], [2, 1]])
    message = raises("too long", check_dataset, f"csv:{long_name}")
    assert message.startswith(f"Dataset file {long_name} (from 'csv:{long_name}') has a name too long")
    assert "263 bytes" in message
    shorter = tmp_path / ("電離層データ" + ".csv")
    write_csv(shorter, ["a", "y"], [[1, 0], [2, 1]])
    assert check_dataset(f"csv:{shorter}").name == "電離層データ"


def test_check_dataset_files(tmp_path, monkeypatch):
    missing = tmp_path / "missing.csv"
    message = raises("does not exist", check_dataset, f"csv:{missing}")
    assert message == f"Dataset file {missing} (from 'csv:{missing}') does not exist or is not a file"
    raises("names no file", check_dataset, "csv:")
    write_csv(tmp_path / "rel.csv", ["a", "y"], [[1, 0]])
    monkeypatch.chdir(tmp_path)
    ref = check_dataset("csv:rel.csv?target=y")
    assert ref == DatasetRef("csv:rel.csv?target=y", "rel", f"{tmp_path / 'rel.csv'}?target=y", "table")


def test_check_dataset_options(tmp_path):
    path = write_csv(tmp_path / "o.csv", ["a", "y"], [[1, 0]])
    raises(r"Unknown option 'sep' in dataset 'csv:.*\?sep=;': valid options: target", check_dataset,
           f"csv:{path}?sep=;")
    raises(r"Option 'target' in dataset .* needs a value", check_dataset, f"csv:{path}?target")
    raises(r"Unknown option 'x' in dataset 'digits\?x=1': it takes no options", check_dataset, "digits?x=1")


def test_check_dataset_data_dir(tmp_path):
    raises(r"`data_dir` must be a folder. Received: data_dir=.*nowhere", check_dataset, "mnist",
           str(tmp_path / "nowhere"))
    message = raises("holds none of the file sets", check_dataset, "mnist", str(tmp_path))
    assert "train-images-idx3-ubyte.gz" in message and "mnist.npz" in message
    message = raises("holds none of the file sets", check_dataset, "cifar10", str(tmp_path))
    assert message.endswith(
        "Looked for: data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch "
        "in data_dir, cifar-10-batches-py/, cifar-10-batches-py-target/cifar-10-batches-py/; "
        "or cifar-10-python.tar.gz")
    raises("Looked for: ionosphere.data; or ionosphere.csv", check_dataset, "ionosphere", str(tmp_path))
    # A set found in part: the message names what is missing.
    x, y, x_test, y_test = mnist_arrays()
    write_gz(tmp_path / IDX_NAMES[0], idx_bytes(x))
    raises(r"\(it lacks train-labels-idx1-ubyte.gz, t10k-images", check_dataset, "mnist", str(tmp_path))
    # digits ships with scikit-learn: any folder will do.
    assert check_dataset("digits", str(tmp_path)).name == "digits"


def test_check_dataset_imports_no_framework():
    code = ("import sys; from lrsweep.data import check_dataset; check_dataset('digits'); "
            "check_dataset('ionosphere', 'tests/data'); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules "
            "and 'sklearn' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --- without data_dir: Keras' cache, then Keras ----------------------------------------

def test_reads_keras_cache_without_keras(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    x, y, x_test, y_test = mnist_arrays()
    (tmp_path / "datasets").mkdir()
    np.savez(tmp_path / "datasets" / "mnist.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    data = load_dataset("mnist", validation_split=None)  # `import keras` would fail here
    assert data.x_train.shape == (300, 28, 28, 1)


KERAS_FALLBACK = "/tmp/.keras"  # where Keras downloads when its home is not writable


@pytest.mark.parametrize("home", ["KERAS_HOME below a file", "KERAS_HOME to create", "HOME"])
def test_looks_where_keras_downloads(tmp_path, home):
    """The folder lrsweep reads Keras' downloads from is the one the real Keras uses: asked
    for a file (a probe) only that folder holds, `keras.utils.get_file` finds it there
    instead of downloading it (from a port no server listens on: a download fails). Keras'
    home is KERAS_HOME, a folder Keras creates as it is imported if it can, or ~/.keras; and
    /tmp/.keras where it cannot be created (here a path below a file). What the test creates
    in /tmp/.keras is removed after it."""
    if home == "KERAS_HOME below a file" and os.path.exists(KERAS_FALLBACK) and not os.access(KERAS_FALLBACK,
                                                                                            os.W_OK):
        pytest.skip(f"{KERAS_FALLBACK} belongs to another user: Keras cannot download there either")
    (tmp_path / "file").touch()
    env = {name: value for name, value in os.environ.items() if name != "KERAS_HOME"}
    if home == "KERAS_HOME below a file":
        env["KERAS_HOME"] = str(tmp_path / "file" / "keras")
    elif home == "KERAS_HOME to create":
        env["KERAS_HOME"] = str(tmp_path / "new" / "keras")
    else:
        env["HOME"] = str(tmp_path)
    code = (
        "import os, keras\n"
        "from lrsweep.data.registry import keras_cache\n"
        "folder = keras_cache()\n"
        "probe = os.path.join(folder, f'lrsweep-probe-{os.getpid()}')\n"
        "os.makedirs(folder, exist_ok=True)\n"
        "open(probe, 'w').close()\n"
        "try:\n"
        "    path = keras.utils.get_file(os.path.basename(probe), origin='http://127.0.0.1:9/none')\n"
        "finally:\n"
        "    os.remove(probe)\n"
        "assert path == probe, (path, probe)\n"
        "print(folder)\n"
    )
    fallback_there = os.path.exists(KERAS_FALLBACK)
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        if not fallback_there:
            shutil.rmtree(KERAS_FALLBACK, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = {"KERAS_HOME below a file": KERAS_FALLBACK, "KERAS_HOME to create": str(tmp_path / "new" / "keras"),
                "HOME": str(tmp_path / ".keras")}[home]
    assert done.stdout.strip() == os.path.join(expected, "datasets")


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    """The real Keras download fails (here from a port no server listens on, so that the
    test does not depend on the machine being offline), and says so in one line, with the
    folders a copy may be in."""
    import lrsweep.data.tables

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(lrsweep.data.tables, "IONOSPHERE_URL", "http://127.0.0.1:9/ionosphere.data")
    monkeypatch.delitem(sys.modules, "keras")  # the real one, this time
    message = raises(r"Could not download dataset ionosphere .*Without internet, give data_dir \(--data-dir\) a folder", load_dataset,
                     "ionosphere")
    # where a copy is read from without data_dir: where the download would have gone
    assert f"or copy one into {tmp_path / 'datasets'}, where it is read from without data_dir" in message
    assert "ionosphere.data" in message.split("or copy one into")[1]


def test_dataset_pickles():
    """The driver shares a Dataset with trials through Ray's object store."""
    data = load_dataset("ionosphere", data_dir=str(TEST_DATA))
    again = pickle.loads(pickle.dumps(data))
    assert isinstance(again, Dataset) and again.validation == data.validation
    np.testing.assert_array_equal(again.x_train, data.x_train)
