"""lrsweep: find the best learning-rate schedule for a Keras model on a dataset.

A sweep file defines `SWEEP = lrsweep.Sweep(...)`; `python -m lrsweep launch SWEEP.py`
runs it on Ray. The public names load lazily, so that `import lrsweep` (and loading a
sweep file) imports neither TensorFlow nor Ray.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Sweep": "lrsweep.sweep.spec",
    "Range": "lrsweep.sweep.spec",
    "Choice": "lrsweep.sweep.spec",
    "LrsweepError": "lrsweep.errors",
    "FAMILIES": "lrsweep.schedules.registry",
    "build_schedule": "lrsweep.schedules.registry",
    "load_dataset": "lrsweep.data",
    "read_table": "lrsweep.results.store",
    "read_frame": "lrsweep.results.store",
    "rank": "lrsweep.results.rank",
    "query": "lrsweep.results.query",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lrsweep' has no attribute {name!r}")
