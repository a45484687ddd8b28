"""From arrays as read to the `Dataset` a trial trains on: subsample, validation split, scaling.

The order is the SPEC's: a seeded subset of the training rows first, then the last fraction
of them held out as Keras' `validation_split` does, then scaling fitted on the rows left for
training. A dataset's own test split is never subsampled.

Also here, as the image and table readers share them: `Arrays`, and reading a file into
a clear LrsweepError.
"""

import functools
import hashlib
import math
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from lrsweep.errors import LrsweepError, warn

SCALES = ("auto", "none", "unit", "standard")


@dataclass
class Arrays:
    """A dataset as read from its files: training rows, its test split if it has one."""

    x: np.ndarray  # any numeric dtype; images (N, H, W, C), tables (N, F)
    y: np.ndarray  # int64 class indices
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]
    # The format's largest value (255 for 8-bit pixels, 16 for digits), which `unit`
    # divides by; None: divide by the largest absolute training value.
    max_value: float | None = None
    test_name: str = "test split"  # how `Dataset.validation` names x_test


@dataclass
class Dataset:
    """Training and validation rows, ready for `model.fit`."""

    name: str
    source: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    classes: list[str]
    validation: str

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def task(self):
        return "binary" if self.num_classes == 2 else "multiclass"

    @functools.cached_property
    def fingerprint(self):
        """What a run keeps of the data it was launched with, which a `--resume` must train on
        too: its rows, inputs and classes, and a digest of the arrays as trained on (after
        subsampling, splitting and scaling), which changes with any value of a file edited
        since (a third of a second for 600 MB)."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val):
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).data)
        return {"training_rows": len(self.x_train), "validation_rows": len(self.x_val),
                "inputs": list(self.input_shape), "classes": [str(c) for c in self.classes],
                "digest": digest.hexdigest()[:16]}


def inputs_text(shape):
    """A row's inputs: "34 features" for a table, "32x32x3" for an image."""
    return f"{shape[0]} feature{'s' * (shape[0] != 1)}" if len(shape) == 1 else "x".join(str(d) for d in shape)


def read_bytes(path, opener=open):
    """The bytes of `path` (opened with `opener`, e.g. gzip.open); LrsweepError if unreadable."""
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise LrsweepError(f"Dataset file {path} cannot be read: {one_line(e)}") from None


def read_npz_arrays(path):
    """Every array in the `.npz` file `path` (no pickles); LrsweepError if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise LrsweepError(
            f"Dataset file {path} is not a readable .npz file: {one_line(e)}"
        ) from None


def one_line(error):
    """`error`'s message on one line, as LrsweepError messages are printed."""
    return " ".join(str(error).split())


def check_options(subsample, validation_split, scale, seed):
    """LrsweepError for a bad option, before any file is read."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise LrsweepError(f"Argument `seed` must be an integer >= 0. Received: seed={seed!r}")
    if subsample is not None and (
        not isinstance(subsample, (int, np.integer)) or isinstance(subsample, bool) or subsample < 1
    ):
        raise LrsweepError(
            "Argument `subsample` must be an integer >= 1 or None. "
            f"Received: subsample={subsample!r}"
        )
    if validation_split is not None and (
        not isinstance(validation_split, (int, float)) or isinstance(validation_split, bool)
        or not 0 < validation_split < 1
    ):
        raise LrsweepError(
            "Argument `validation_split` must be a number with 0 < validation_split < 1, or None "
            f"for the dataset's own test split. Received: validation_split={validation_split!r}"
        )
    if scale not in SCALES:
        raise LrsweepError(
            f"Argument `scale` must be one of {', '.join(SCALES)}. Received: scale={scale!r}"
        )


def no_test_split(ref):
    return LrsweepError(f"Dataset {ref.name} has no test split: give a validation_split between 0 and 1. "
                        "Received: validation_split=None")


def prepare(ref, arrays, *, auto_scale, subsample, validation_split, scale, seed):
    """The `Dataset` of `ref` (a DatasetRef) from `arrays`, by the rules in the module docstring."""
    x, y = arrays.x, arrays.y
    if not len(x):
        raise LrsweepError(f"Dataset {ref.name} has no training rows. Received: dataset={ref.spec!r}")
    if subsample is not None:
        if subsample > len(x):
            raise LrsweepError(
                f"Argument `subsample` must be at most the {len(x)} training rows of {ref.name}. "
                f"Received: subsample={subsample}"
            )
        # Sorted so that the subset keeps the file's order, which the split below relies on.
        rows = np.sort(np.random.default_rng(seed).choice(len(x), size=subsample, replace=False))
        x, y = x[rows], y[rows]

    if validation_split is None:
        if arrays.x_test is None:
            raise no_test_split(ref)
        x_train, y_train, x_val, y_val = x, y, arrays.x_test, arrays.y_test
        if not len(x_val):  # Keras reports no val_* metrics for it, and every trial would end diverged
            raise LrsweepError(f"Dataset {ref.name}'s {arrays.test_name} holds no rows to validate on: give a "
                               f"validation_split between 0 and 1. Received: validation_split=None")
        validation = f"{arrays.test_name} ({len(x_val)} rows)"
    else:
        # keras/src/trainers/data_adapters/array_slicing.py: train_validation_split
        split_at = math.floor(len(x) * (1.0 - validation_split))
        if split_at in (0, len(x)):
            raise LrsweepError(
                f"Dataset {ref.name} has {len(x)} training rows, too few to hold out a fraction "
                f"of them. Received: validation_split={validation_split}"
            )
        x_train, y_train, x_val, y_val = x[:split_at], y[:split_at], x[split_at:], y[split_at:]
        validation = f"split {validation_split:g} (last {len(x_val)} of {len(x)} rows)"
    _check_classes(ref, arrays.classes, y_train, y_val, validation_split)

    x_train, x_val = _scale(
        auto_scale if scale == "auto" else scale, arrays.max_value, x_train, x_val
    )
    return Dataset(
        name=ref.name, source=ref.source, kind=ref.kind,
        x_train=x_train, y_train=y_train.astype(np.int64),
        x_val=x_val, y_val=y_val.astype(np.int64),
        num_classes=len(arrays.classes), classes=list(arrays.classes), validation=validation,
    )


def _check_classes(ref, classes, y_train, y_val, validation_split):
    """Training rows of one class teach nothing: bad input. A class the validation rows hold
    and the training rows lack (a file sorted by label, split at its end) is warned of."""
    split = "" if validation_split is None else (f" once its last {len(y_val)} are held out for validation (rows "
                                                 f"keep the file's order: shuffle a file sorted by label)")
    trained = np.unique(y_train)
    if len(trained) < 2:
        raise LrsweepError(f"Dataset {ref.name}'s {len(y_train)} training rows hold one class "
                           f"({classes[trained[0]]}){split}: a classifier needs at least 2. "
                           f"Received: validation_split={validation_split!r}")
    unseen = np.setdiff1d(np.unique(y_val), trained)
    if len(unseen):
        warn(f"dataset {ref.name}: its validation rows hold {len(unseen)} class(es) that its training rows do not "
             f"({', '.join(str(classes[i]) for i in unseen[:5])}){split}: no trial can learn them")


def _scale(scale, max_value, x_train, x_val):
    """`x_train` and `x_val` as float32, scaled by statistics of `x_train` alone."""
    x_train = x_train.astype(np.float32)
    x_val = x_val.astype(np.float32)
    if scale == "unit":
        largest = max_value if max_value is not None else float(np.abs(x_train).max(initial=0.0))
        # An all-zero training set has nothing to scale.
        divisor = np.float32(largest or 1.0)
        x_train /= divisor
        x_val /= divisor
    elif scale == "standard":
        # Statistics in float64, applied in float32 in place: CIFAR-10 in float64 is 1.2 GB.
        mean = x_train.mean(axis=0, dtype=np.float64)
        std = x_train.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0
        for x in (x_train, x_val):
            x -= mean.astype(np.float32)
            x /= std.astype(np.float32)
    return x_train, x_val
