"""Dataset names and where each is read from; `csv:PATH?target=NAME` and `npz:PATH` specs.

`check_dataset` answers bad input from the spec and the file names alone, without
TensorFlow, Keras or scikit-learn. `load_dataset` reads the data: from `data_dir` when it
is given, else from Keras' cache when Keras has already downloaded it there, else through
Keras (or scikit-learn, for `digits`).

Adding a dataset: a reader in `images.py` or `tables.py` and one line in `_SOURCES`.
"""

import os
import tempfile
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple
from urllib.parse import parse_qsl

from lrsweep.data import images, tables
from lrsweep.data.prepare import check_options, prepare
from lrsweep.errors import LrsweepError


class _Files(NamedTuple):
    """One set of files a dataset can be read from, relative to a folder, and their reader."""

    names: tuple[str, ...]
    read: Callable  # list of paths -> Arrays


class _Source(NamedTuple):
    """A named dataset: its kind, its `auto` scale, and where it is read from."""

    kind: str
    test_split: bool  # the dataset has one of its own (a sweep may validate on it)
    auto_scale: str
    files: tuple[_Files, ...]  # the sets data_dir may hold, the first complete one wins
    fetch: Callable  # () -> Arrays, when no local copy exists


def _idx(name, folder=""):
    names = tuple(os.path.join(folder, f) for f in images.IDX_FILES)
    return _Files(names, partial(images.read_idx, name=name))


def _cifar_batches(folder):
    names = tuple(os.path.join(folder, b) for b in images.CIFAR_BATCHES)
    return _Files(names, images.read_cifar_batches)


_SOURCES = {
    "digits": _Source("image", False, "unit", (), images.load_digits),
    "cifar10": _Source("image", True, "unit", (
        _cifar_batches(""),
        _cifar_batches(images.CIFAR_FOLDER),
        # Where Keras 3 unpacks the archive in its cache.
        _cifar_batches(os.path.join("cifar-10-batches-py-target", images.CIFAR_FOLDER)),
        _Files((images.CIFAR_ARCHIVE,), images.read_cifar_archive),
    ), partial(images.download, "cifar10")),
    "fashion_mnist": _Source("image", True, "unit", (
        _idx("fashion_mnist"),
        _idx("fashion_mnist", "fashion-mnist"),  # Keras' cache folder
    ), partial(images.download, "fashion_mnist")),
    "mnist": _Source("image", True, "unit", (
        _idx("mnist"),
        _Files(("mnist.npz",), images.read_keras_mnist),
    ), partial(images.download, "mnist")),
    # The classic tutorial trains on the raw values, already within [-1, 1].
    "ionosphere": _Source("table", False, "none", tuple(
        _Files((name,), tables.read_ionosphere) for name in tables.IONOSPHERE_FILES
    ), tables.download_ionosphere),
}
DATASETS = tuple(_SOURCES)
_FILE_OPTIONS = {"csv": ("target",), "npz": ()}  # the `?key=` options of each file prefix


@dataclass(frozen=True)
class DatasetRef:
    """What a dataset spec means, found without reading the data."""

    spec: str  # as given, e.g. "csv:/data/my.csv?target=label"
    name: str  # partition name: the registry name, or the file's stem for csv:/npz: ("my")
    source: str  # the registry name, or the absolute path (+ "?target=..." if given)
    kind: str  # "image" or "table"
    test_split: bool = False  # the dataset has a test split of its own (validation_split=None)


def check_dataset(spec, data_dir=None):
    """The `DatasetRef` of `spec`, or LrsweepError if it cannot name data that exists.

    Checks the name, the options after `?`, that a csv:/npz: file exists, and that
    `data_dir` (when given) is a folder holding the files the dataset is read from.
    """
    return _parse(spec, data_dir).ref


def load_dataset(spec, *, data_dir=None, subsample=None, validation_split=0.2, scale="auto",
                 seed=0, offline=False):
    """The `Dataset` named by `spec`, subsampled, split and scaled.

    Args:
        spec: a name in DATASETS, `csv:PATH[?target=NAME]` or `npz:PATH`.
        data_dir: a folder holding a local copy of a named dataset in its original format.
        subsample: draw this many training rows at random (seeded), before the split.
        validation_split: hold out this last fraction of the training rows, as Keras does;
            None: validate on the dataset's own test split.
        scale: "none", "unit", "standard" or "auto" (unit for images, standard for csv,
            none for ionosphere and npz).
        seed: the seed of the subsample.
        offline: return None instead of downloading a dataset that is not here yet.

    Example:
        >>> load_dataset("ionosphere", data_dir="tests/data", validation_split=0.33).validation
        'split 0.33 (last 116 of 351 rows)'
    """
    parsed = _parse(spec, data_dir)
    check_options(subsample, validation_split, scale, seed)
    if parsed.path is None:
        arrays = _read_named(parsed.ref.name, parsed.data_dir, offline)
        if arrays is None:
            return None
        auto_scale = _SOURCES[parsed.ref.name].auto_scale
    elif spec.startswith("csv:"):
        arrays = tables.read_csv(parsed.path, parsed.target)
        auto_scale = "standard"
    else:
        arrays = tables.read_npz(parsed.path)
        auto_scale = "none"
    return prepare(parsed.ref, arrays, auto_scale=auto_scale, subsample=subsample,
                   validation_split=validation_split, scale=scale, seed=seed)


class _Parsed(NamedTuple):
    ref: DatasetRef
    path: str | None  # the csv:/npz: file, absolute
    target: str | None  # csv's `?target=`
    data_dir: str | None  # with ~ expanded


def _parse(spec, data_dir):
    """What `spec` and `data_dir` mean, or LrsweepError: everything `check_dataset` checks."""
    if not isinstance(spec, str):
        raise LrsweepError(f"Argument `dataset` must be a string. Received: dataset={spec!r}")
    prefix, colon, rest = spec.partition(":")
    is_file = bool(colon) and prefix in _FILE_OPTIONS
    body, _, query = (rest if is_file else spec).partition("?")
    options = _options(spec, query, _FILE_OPTIONS[prefix] if is_file else ())
    if data_dir is not None:
        data_dir = os.path.expanduser(data_dir)
        if not os.path.isdir(data_dir):
            raise LrsweepError(
                f"Argument `data_dir` must be a folder. Received: data_dir={data_dir!r}"
            )

    if not is_file:
        if body not in _SOURCES:
            raise LrsweepError(
                f"Unknown dataset: {spec!r}. Valid names: {', '.join(DATASETS)}, "
                "or csv:PATH, npz:PATH"
            )
        if data_dir is not None:
            _local_files(body, data_dir, required=True)
        source = _SOURCES[body]
        return _Parsed(DatasetRef(spec, body, body, source.kind, source.test_split), None, None, data_dir)

    if not body:
        raise LrsweepError(f"Dataset {spec!r} names no file: write {prefix}:PATH")
    path = os.path.abspath(os.path.expanduser(body))
    if not os.path.isfile(path):
        raise LrsweepError(f"Dataset file {path} (from {spec!r}) does not exist or is not a file")
    source = path + (f"?{query}" if query else "")
    stem = os.path.splitext(os.path.basename(path))[0]
    from lrsweep.results.store import NAME_MAX, segment

    folder = segment("dataset", stem).encode()  # the results folder the dataset's trials are stored in
    if len(folder) > NAME_MAX:
        raise LrsweepError(f"Dataset file {path} (from {spec!r}) has a name too long for the results folder named "
                           f"after it: {len(folder)} bytes, URI-encoded, of at most {NAME_MAX}; copy the file under "
                           f"a shorter name")
    if prefix == "csv":
        tables.check_csv_target(path, options.get("target"))
        kind, test_split = "table", False
    else:
        kind, test_split = tables.npz_kind(path)
    return _Parsed(DatasetRef(spec, stem, source, kind, test_split), path, options.get("target"), data_dir)


def _options(spec, query, valid):
    """The `key=value` options after `?` in `spec`, each one of `valid`."""
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:  # a pair without '=', or an empty one (a '&' at the end)
        pairs = [(part, "") if "=" not in part else tuple(part.split("=", 1)) for part in query.split("&")]
    options = {}
    for key, value in pairs:
        if not key and not value:
            raise LrsweepError(f"Dataset {spec!r} has an empty option (a '&' too many): options are written "
                               f"key=value, joined by '&'")
        if key in options:
            raise LrsweepError(f"Option {key!r} is given twice in dataset {spec!r}: give it once")
        if key not in valid:
            allowed = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
            raise LrsweepError(f"Unknown option {key!r} in dataset {spec!r}: {allowed}")
        if not value:
            raise LrsweepError(f"Option {key!r} in dataset {spec!r} needs a value: {key}=VALUE")
        options[key] = value
    return options


def _local_files(name, folder, required):
    """(file set, paths) of the first complete file set of dataset `name` in `folder`.

    None if there is none and not `required`; else LrsweepError listing what was looked for.
    """
    sets = _SOURCES[name].files
    lacking = []  # of a set found in part, which is the likelier mistake to report
    for files in sets:
        paths = [os.path.join(folder, n) for n in files.names]
        missing = [n for n, p in zip(files.names, paths) if not os.path.isfile(p)]
        if not missing:
            return files, paths
        if len(missing) < len(paths) and not lacking:
            lacking = missing
    if not required or not sets:
        return None
    hint = f" (it lacks {', '.join(lacking)})" if lacking else ""
    raise LrsweepError(
        f"Dataset {name}: data_dir {folder!r} holds none of the file sets it is read from{hint}. "
        f"Looked for: {_describe(sets)}"
    )


def _describe(sets):
    """The file sets in words, each list of names said once with the folders it may be in."""
    folders = {}
    for files in sets:
        names = tuple(os.path.basename(n) for n in files.names)
        folders.setdefault(names, []).append(os.path.dirname(files.names[0]))
    said = []
    for names, where in folders.items():
        folders_said = ", ".join(f"{f}/" if f else "data_dir" for f in where)
        places = "" if where == [""] else f" in {folders_said}"
        said.append(", ".join(names) + places)
    return "; or ".join(said)


def _read_named(name, data_dir, offline=False):
    """The arrays of a named dataset: from data_dir, else Keras' cache, else the download
    (`offline`: None instead)."""
    found = _local_files(name, data_dir or keras_cache(), required=data_dir is not None)
    if found is None:
        sets = _SOURCES[name].files
        # a source with no local files to look for (digits) fetches from a file already here
        if offline and sets:
            return None
        try:
            return _SOURCES[name].fetch()
        except LrsweepError as e:
            if not sets:
                raise
            raise LrsweepError(f"{e}, or copy one into {keras_cache()}, where it is read from without data_dir "
                               f"(looked for: {_describe(sets)})") from None
    files, paths = found
    return files.read(paths)


def keras_cache():
    """The folder Keras downloads its datasets into, found as Keras finds it but without
    importing Keras: the `datasets` folder of its home (KERAS_HOME, else ~/.keras, or
    /tmp/.keras where the home folder is not writable), which Keras creates as it is
    imported; of /tmp/.keras where that cannot be created or written (`keras.utils.get_file`)."""
    if "KERAS_HOME" in os.environ:
        home = os.path.expanduser(os.environ["KERAS_HOME"])
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    if not _writable_or_creatable(home):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(home, "datasets")


def _writable_or_creatable(folder):
    """Whether `folder` is a folder one can write in, or could be created (`os.makedirs`)."""
    if not folder:
        return False
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK)
