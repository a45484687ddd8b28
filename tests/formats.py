"""Writers of the datasets' original distribution formats, for small test files."""

import csv
import gzip
import io
import pickle
import tarfile

import numpy as np

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_bytes(array):
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_gz(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(data)


def mnist_arrays(n_train=300, n_test=100, seed=1):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )


def write_idx_set(folder, arrays):
    for name, array in zip(IDX_NAMES, arrays):
        write_gz(folder / name, idx_bytes(array))


def cifar_batches(n_per_batch=40, n_test=30, seed=2):
    """The six CIFAR-10 batches as the dicts the original pickles hold."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * n,
        }
        for name, n in zip(names, [n_per_batch] * 5 + [n_test])
    }


def write_cifar_folder(folder, batches, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))


def write_cifar_archive(path, batches, prefix=""):
    with tarfile.open(path, "w:gz") as archive:
        for name, batch in batches.items():
            raw = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{prefix}cifar-10-batches-py/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
