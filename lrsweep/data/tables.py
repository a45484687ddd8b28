"""Tabular datasets: the UCI ionosphere file, and users' CSV (`csv:`) and `.npz` (`npz:`) files."""

import csv
import io
import zipfile

import numpy as np

from lrsweep.data.prepare import Arrays, one_line, read_bytes, read_npz_arrays
from lrsweep.errors import LrsweepError, warn
from lrsweep.quiet import import_keras

IONOSPHERE_FILES = ("ionosphere.data", "ionosphere.csv")
IONOSPHERE_URL = (
    "https://archive.ics.uci.edu/ml/machine-learning-databases/ionosphere/ionosphere.data"
)
IONOSPHERE_FEATURES = 34
# Sorted, as for any CSV: b(ad) -> 0, g(ood) -> 1.
IONOSPHERE_CLASSES = ["b", "g"]


def read_ionosphere(paths):
    """The UCI file: no header, 34 numbers then the label `g` or `b` on each line."""
    (path,) = paths
    lines = _rows(path)
    if not lines:
        raise LrsweepError(f"Dataset file {path} is empty: expected the UCI ionosphere data")
    for line, row in lines:
        if len(row) != IONOSPHERE_FEATURES + 1:
            raise LrsweepError(
                f"Dataset file {path} line {line} has {len(row)} columns, expected "
                f"{IONOSPHERE_FEATURES + 1} (34 features and the label g or b)"
            )
        if row[-1].strip() not in IONOSPHERE_CLASSES:
            raise LrsweepError(
                f"Dataset file {path} line {line} has the label {row[-1]!r}, expected 'g' or 'b'"
            )
    x = _numbers(path, lines, range(IONOSPHERE_FEATURES), None)
    y = np.array([IONOSPHERE_CLASSES.index(row[-1].strip()) for _, row in lines], dtype=np.int64)
    return Arrays(x, y, None, None, list(IONOSPHERE_CLASSES))


def download_ionosphere():
    """The UCI file through `keras.utils.get_file`, which downloads it once and caches it."""
    keras = import_keras()

    try:
        path = keras.utils.get_file("ionosphere.data", origin=IONOSPHERE_URL)
    except Exception as e:  # Keras wraps every network failure in a bare Exception.
        raise LrsweepError(
            f"Could not download dataset ionosphere from {IONOSPHERE_URL}: {one_line(e)}. "
            "Without internet, give data_dir (--data-dir) a folder holding ionosphere.data or ionosphere.csv"
        ) from None
    return read_ionosphere([path])


def label_column(path, header, target):
    """The index of the label column `target` (None: the last) among the CSV's `header`."""
    if target is None:
        return len(header) - 1
    if target not in header:
        raise LrsweepError(
            f"Dataset file {path} has no column target={target!r}. Its columns: {', '.join(header)}"
        )
    return header.index(target)


def check_csv_target(path, target):
    """That the CSV file's header row names `target`, reading that row alone (the rest of
    the file is checked as it is read)."""
    if target is None:
        return
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next((row for row in csv.reader(f) if row), None)
    except (OSError, csv.Error):
        return
    if header is not None:
        label_column(path, [name.strip() for name in header], target)


def read_csv(path, target=None):
    """A CSV file with a header row: numeric features, the label in column `target` (or the last)."""
    rows = _rows(path)
    if not rows:
        raise LrsweepError(f"Dataset file {path} is empty: a CSV needs a header row and data rows")
    (_, header), rows = rows[0], rows[1:]
    unnamed = header[0] == ""
    header = [name.strip() for name in header]
    label = label_column(path, header, target)
    if len(header) < 2 or not rows:
        raise LrsweepError(
            f"Dataset file {path} has {len(header)} columns and {len(rows)} data rows: "
            "a CSV needs a header, a label column, at least one feature column and data rows"
        )
    for line, row in rows:
        if len(row) != len(header):
            raise LrsweepError(
                f"Dataset file {path} line {line} has {len(row)} columns, expected {len(header)} "
                "as in its header"
            )
    # pandas' to_csv writes the frame's index first, its name empty: row numbers, not a feature
    index = unnamed and label != 0 and _row_numbers([row[0] for _, row in rows])
    features = [i for i in range(len(header)) if i != label and not (index and i == 0)]
    if not features:
        raise LrsweepError(f"Dataset file {path} has no feature column: its columns are the label "
                           f"{header[label]!r} and a first column with no name, pandas' index, which is not a feature")
    if index:
        warn(f"dataset file {path}: its first column has no name, as pandas' to_csv writes the frame's index: it "
             f"is not trained on (name it in the header to train on it; to_csv(index=False) leaves it out)")
    x = _numbers(path, rows, features, header)
    labels = np.array([row[label].strip() for _, row in rows])
    if not all(labels):
        line = rows[int(np.argmin(labels.astype(bool)))][0]
        raise LrsweepError(f"Dataset file {path} line {line} has no label in column {header[label]!r}: every row "
                           f"needs its class")
    y, classes = encode_labels(labels, f"Dataset file {path} column {header[label]!r}")
    if target is None and _reads_as_data(header, label, classes):
        first = ",".join(header)
        warn(f"dataset file {path}: its first row ({first if len(first) <= 60 else first[:57] + '...'}) is taken "
             f"as the header, and it reads as data (numbers, then the class {header[label]!r}): if the file has "
             f"no header row, add one, or that row is not trained on")
    return Arrays(x, y, None, None, classes)


def _row_numbers(cells):
    """Whether `cells` are whole numbers, none twice: an index of rows, as pandas writes one."""
    try:
        numbers = [int(cell) for cell in cells]
    except ValueError:
        return False
    return len(set(numbers)) == len(numbers)


def _reads_as_data(header, label, classes):
    """A header row that looks like one more data row (the UCI files have none): every
    feature's name a number, not pandas' own 0, 1, 2, ... names, and the label column's name
    one of the classes."""
    features = [name for i, name in enumerate(header) if i != label]
    try:
        [float(name) for name in features]
    except ValueError:
        return False
    return features != [str(i) for i in range(len(features))] and header[label] in classes


def read_npz(path):
    """A user's `.npz`: arrays `x` and `y`, and optionally `x_val` and `y_val` as its test split."""
    arrays = read_npz_arrays(path)
    held = ", ".join(sorted(arrays)) or "nothing"
    if "x" not in arrays or "y" not in arrays:
        raise LrsweepError(f"Dataset file {path} must hold arrays x and y. It holds: {held}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise LrsweepError(
            f"Dataset file {path} must hold both x_val and y_val or neither. It holds: {held}"
        )
    for x_name, y_name in (("x", "y"), ("x_val", "y_val")):
        if x_name in arrays:
            arrays[y_name] = _npz_labels(path, arrays, x_name, y_name)
    x, x_val = arrays["x"], arrays.get("x_val")
    for name in ("x", "x_val"):
        _check_finite(path, name, arrays.get(name))
    if x_val is not None and x_val.shape[1:] != x.shape[1:]:
        raise LrsweepError(
            f"Dataset file {path} arrays x and x_val differ in shape: {x.shape} and {x_val.shape}"
        )
    if x.ndim == 3:  # grey images without a channel axis
        x = x[..., np.newaxis]
        x_val = None if x_val is None else x_val[..., np.newaxis]
    # One class index for a label whether it is in y or in y_val: labels of one kind in both
    # (numbers and texts would make the 1 of y another class than the '1' of y_val)
    labels = [arrays["y"]] + ([] if x_val is None else [arrays["y_val"]])
    if len({_label_kind(y) for y in labels}) > 1:
        raise LrsweepError(f"Dataset file {path} arrays y and y_val must hold labels of one kind, numbers or texts. "
                           f"Received: y of dtype {labels[0].dtype}, y_val of dtype {labels[1].dtype}")
    encoded, classes = encode_labels(np.concatenate(labels), f"Dataset file {path} array y")
    y, y_val = encoded[:len(x)], (None if x_val is None else encoded[len(x):])
    return Arrays(x, y, x_val, y_val, classes, test_name="x_val/y_val")


def _check_finite(path, name, x, values_at_once=1 << 22):
    """A float array of a user's npz holds no NaN or infinity, which a csv cell may not hold
    either (every trial would diverge); checked some rows at a time (about `values_at_once`
    values), as the array may be most of memory."""
    if x is None or x.dtype.kind != "f" or not len(x):
        return
    rows_at_once = max(1, values_at_once // (x.size // len(x) or 1))
    for start in range(0, len(x), rows_at_once):
        bad = ~np.isfinite(x[start:start + rows_at_once]).reshape(min(rows_at_once, len(x) - start), -1).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            values = x[row].reshape(-1)
            value = values[~np.isfinite(values)][0]
            raise LrsweepError(f"Dataset file {path} array {name} holds {value} in row {row}: features must be "
                               f"finite numbers")


def npz_kind(path):
    """("image" if array `x` of the `.npz` file `path` has 3 or more dimensions, else "table",
    whether it holds a test split `x_val`).

    Reads the array's header only, so that `check_dataset` stays fast on a large file.
    """
    try:
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as f:
            test_split = "x_val.npy" in archive.namelist()
            # Format 3.0 differs from 2.0 only in the header's text encoding.
            if np.lib.format.read_magic(f) == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
    except KeyError:
        raise LrsweepError(
            f"Dataset file {path} holds no array x: an npz: dataset needs x and y"
        ) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise LrsweepError(
            f"Dataset file {path} is not a readable .npz file: {one_line(e)}"
        ) from None
    return ("image" if len(shape) >= 3 else "table"), test_split


def _npz_labels(path, arrays, x_name, y_name):
    """Array `y_name` as one label per row of `x_name`, once both are checked."""
    xs, ys = arrays[x_name], arrays[y_name]
    if xs.dtype.kind not in "biuf" or not 2 <= xs.ndim <= 4 or 0 in xs.shape[1:]:
        raise LrsweepError(
            f"Dataset file {path} array {x_name} must be numbers of shape (N, F), (N, H, W) or "
            f"(N, H, W, C), none of F, H, W, C 0. Received: {x_name} of dtype {xs.dtype} and shape {xs.shape}"
        )
    if ys.ndim == 2 and ys.shape[1] == 1:  # Keras' own (N, 1) labels
        ys = ys.reshape(-1)
    if ys.ndim != 1 or len(ys) != len(xs):
        raise LrsweepError(
            f"Dataset file {path} array {y_name} must hold one label per row of {x_name}. "
            f"Received: {y_name} of shape {ys.shape} for {x_name} of shape {xs.shape}"
        )
    return ys


def _label_kind(labels):
    """Numbers or names, as `encode_labels` reads them: texts that are all numbers ('0', '1')
    are numbers."""
    return "text" if _as_numbers(labels).dtype.kind in "UO" else "number"


def _as_numbers(labels):
    """`labels` as float64 where they are texts of numbers; other texts as str."""
    if labels.dtype.kind == "S":
        labels = labels.astype(str)
    if labels.dtype.kind == "U":
        try:
            labels = labels.astype(np.float64)
        except ValueError:
            pass  # not all numbers: classes by name
    return labels


def encode_labels(labels, where):
    """Class indices (the sorted distinct labels -> 0..K-1) and the classes as strings.

    Labels that are all numbers must be integers and sort as numbers; others sort as strings.
    """
    labels = _as_numbers(labels)
    if labels.dtype.kind == "f":
        bad = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        if len(bad):
            raise LrsweepError(
                f"{where} holds the label {bad[0]:g}, which is not a class: "
                "labels must be integers or names"
            )
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "biuU":
        raise LrsweepError(
            f"{where} holds labels of dtype {labels.dtype}: labels must be integers or names"
        )
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise LrsweepError(
            f"{where} has {len(classes)} class{'es' if len(classes) != 1 else ''} "
            f"({', '.join(map(str, classes))}): a classifier needs at least 2"
        )
    return y.reshape(-1).astype(np.int64), [str(c) for c in classes]


def _rows(path):
    """(line number, cells) of each non-blank line of the CSV file `path`."""
    try:
        text = read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LrsweepError(f"Dataset file {path} is not UTF-8 text: {one_line(e)}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return [(reader.line_num, row) for row in reader if row]
    except csv.Error as e:
        raise LrsweepError(
            f"Dataset file {path} line {reader.line_num} is not CSV: {one_line(e)}"
        ) from None


def _numbers(path, rows, columns, header):
    """The cells of `columns` in `rows` as float64; LrsweepError names the first non-number."""
    try:
        x = np.array([[float(row[i]) for i in columns] for _, row in rows], dtype=np.float64)
    except ValueError:
        x = None
    if x is not None and np.isfinite(x).all():
        return x.reshape(len(rows), len(columns))
    for line, row in rows:
        for i in columns:
            try:
                if np.isfinite(float(row[i])):
                    continue
            except ValueError:
                pass
            column = header[i] if header else i + 1
            raise LrsweepError(
                f"Dataset file {path} line {line} column {column!r} holds {row[i]!r}, "
                "not a finite number"
            )
