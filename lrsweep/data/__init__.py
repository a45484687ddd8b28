"""Datasets: digits, CIFAR-10, MNIST, Fashion-MNIST, UCI ionosphere, and csv: and npz: files."""

from lrsweep.data.prepare import Dataset
from lrsweep.data.registry import DATASETS, DatasetRef, check_dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetRef", "check_dataset", "load_dataset"]
