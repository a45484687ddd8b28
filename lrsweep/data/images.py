"""Image datasets in their original formats: MNIST and Fashion-MNIST (IDX), CIFAR-10 (pickles).

The files are parsed here with numpy, gzip, pickle and tarfile, so a local copy loads without
TensorFlow; only a download goes through `keras.datasets`. Images come out as (N, H, W, C).
"""

import gzip
import importlib.util
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from lrsweep.data.prepare import Arrays, one_line, read_bytes, read_npz_arrays
from lrsweep.errors import LrsweepError
from lrsweep.quiet import import_keras

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

DIGITS_CLASSES = [str(d) for d in range(10)]
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside scikit-learn
MNIST_CLASSES = DIGITS_CLASSES
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
_CLASSES = {
    "mnist": MNIST_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES,
}

_IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension
_CIFAR_PIXELS = 3 * 32 * 32

# What a CIFAR batch may ask the unpickler for: numpy's array reconstruction (under its
# numpy 1 and numpy 2 module names) and the bytes codec Python 3 uses in protocol 2.
# Anything else is refused, so a tampered file cannot run code.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # an array pickled with protocol 5 (Python 3.8+)
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


def read_idx(paths, name):
    """MNIST-format `paths` (the four IDX_FILES, in that order) of dataset `name`."""
    train_images, train_labels, test_images, test_labels = paths
    x, y = _idx_pair(train_images, train_labels)
    x_test, y_test = _idx_pair(test_images, test_labels)
    return Arrays(x, y, x_test, y_test, _CLASSES[name], max_value=255.0)


def read_keras_mnist(paths):
    """Keras' cached `mnist.npz`: x_train, y_train, x_test, y_test."""
    (path,) = paths
    arrays = read_npz_arrays(path)
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise LrsweepError(
            f"Dataset file {path} lacks the arrays {', '.join(missing)}. "
            f"It holds: {', '.join(sorted(arrays)) or 'nothing'}"
        )
    x = _images(arrays["x_train"], path)
    y = _labels(arrays["y_train"], len(x), path)
    x_test = _images(arrays["x_test"], path)
    y_test = _labels(arrays["y_test"], len(x_test), path)
    return Arrays(x, y, x_test, y_test, MNIST_CLASSES, max_value=255.0)


def read_cifar_batches(paths):
    """CIFAR-10's python batches: `paths` are data_batch_1..5 then test_batch."""
    return _cifar([(path, read_bytes(path)) for path in paths])


def read_cifar_archive(paths):
    """The `cifar-10-python.tar.gz` archive, read without unpacking it to disk."""
    (path,) = paths
    try:
        with tarfile.open(path, "r:gz") as archive:
            # `tar czf x.tar.gz ./cifar-10-batches-py` names them ./cifar-10-batches-py/...
            members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
            batches = []
            for batch in CIFAR_BATCHES:
                member = members.get(f"{CIFAR_FOLDER}/{batch}")
                if member is None:
                    raise LrsweepError(
                        f"Dataset file {path} lacks {CIFAR_FOLDER}/{batch}: not the CIFAR-10 "
                        "python archive"
                    )
                batches.append((f"{path}:{member.name}", archive.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise LrsweepError(
            f"Dataset file {path} is not a readable tar.gz archive: {one_line(e)}"
        ) from None
    return _cifar(batches)


def load_digits():
    """scikit-learn's 8x8 digits (1,797 images, values 0..16), which ship with it. Read from
    its file as its `load_digits` reads it, without importing scikit-learn (0.8 s of a
    launch's start-up here); through scikit-learn where the file is not found."""
    package = importlib.util.find_spec("sklearn")
    path = os.path.join(package.submodule_search_locations[0], *DIGITS_FILE) if package else ""
    if os.path.exists(path):
        table = np.loadtxt(path, delimiter=",")
        x, y = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.data, digits.target
    return Arrays(x.reshape(-1, 8, 8, 1), y.astype(np.int64), None, None, DIGITS_CLASSES, max_value=16.0)


def download(name):
    """`keras.datasets.<name>.load_data()`, which downloads once and caches the files."""
    keras = import_keras()

    try:
        (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as e:  # Keras wraps every network failure in a bare Exception.
        raise LrsweepError(
            f"Could not download dataset {name} with keras.datasets.{name}.load_data(): "
            f"{one_line(e)}. Without internet, give data_dir (--data-dir) a folder holding a copy"
        ) from None
    if x.ndim == 3:
        x, x_test = x[..., np.newaxis], x_test[..., np.newaxis]
    elif keras.config.image_data_format() == "channels_first":
        x, x_test = x.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
    return Arrays(
        x, y.reshape(-1).astype(np.int64), x_test, y_test.reshape(-1).astype(np.int64),
        _CLASSES[name], max_value=255.0,
    )


def _idx_pair(images_path, labels_path):
    images = _idx(images_path, _IDX_IMAGES)
    labels = _idx(labels_path, _IDX_LABELS)
    if len(images) != len(labels):
        raise LrsweepError(
            f"Dataset files {images_path} and {labels_path} disagree: {len(images)} images, "
            f"{len(labels)} labels"
        )
    return images[..., np.newaxis], _labels(labels, len(labels), labels_path)


def _idx(path, magic):
    """The uint8 array in the gzipped IDX file `path`, whose magic number must be `magic`."""
    data = read_bytes(path, gzip.open)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise LrsweepError(
            f"Dataset file {path} is truncated: {len(data)} bytes, shorter than an IDX header"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise LrsweepError(
            f"Dataset file {path} is not an IDX file: magic number 0x{found:08x}, "
            f"expected 0x{magic:08x}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise LrsweepError(
            f"Dataset file {path} is truncated: {len(data) - header} bytes of data, expected "
            f"{expected} for shape {shape}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _cifar(batches):
    """CIFAR-10 from (where, pickled bytes) of data_batch_1..5 and test_batch, in that order."""
    parts = [_cifar_batch(where, raw) for where, raw in batches]
    x = np.concatenate([p[0] for p in parts[:-1]])
    y = np.concatenate([p[1] for p in parts[:-1]])
    x_test, y_test = parts[-1]
    return Arrays(x, y, x_test, y_test, CIFAR10_CLASSES, max_value=255.0)


def _cifar_batch(where, raw):
    try:
        # The original batches were pickled by Python 2: its str keys arrive as bytes.
        batch = _Unpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a damaged pickle can raise almost anything
        raise LrsweepError(
            f"Dataset file {where} is not a readable CIFAR-10 batch: "
            f"{type(e).__name__}: {one_line(e)}"
        ) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise LrsweepError(
            f"Dataset file {where} is not a CIFAR-10 batch: no b'data' and b'labels'"
        )
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR_PIXELS):
        raise LrsweepError(
            f"Dataset file {where} is not a CIFAR-10 batch: b'data' must be uint8 of shape "
            f"(N, {_CIFAR_PIXELS}), got {getattr(data, 'dtype', type(data).__name__)} "
            f"{getattr(data, 'shape', '')}"
        )
    # Stored as 3 planes of 32x32 (channels first); lrsweep's images are channels last.
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, _labels(np.asarray(batch[b"labels"]), len(x), where)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _images(x, path):
    if x.ndim != 3:
        raise LrsweepError(
            f"Dataset file {path} holds images of shape {x.shape}, expected (N, H, W)"
        )
    return x[..., np.newaxis]


def _labels(y, count, where):
    """`y` as int64 class indices 0..9, checked against the `count` images they label."""
    y = y.reshape(-1)
    if len(y) != count:
        raise LrsweepError(f"Dataset file {where} has {len(y)} labels for {count} images")
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise LrsweepError(f"Dataset file {where} has labels outside the 10 classes 0..9")
    return y.astype(np.int64)

