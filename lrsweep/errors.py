"""The one error type for bad input, which `__main__` prints as one line and exits 2; the
store that cannot be written mid-run, which `launch` prints as one line and exits 1; and
the one-line warning, for what goes on but the user should know."""

import sys


class LrsweepError(ValueError):
    """Bad input from the user: a sweep file, a flag, a parameter, a dataset file.

    The message names the field and the value it got, in Keras' words:
    ``Argument `epochs_drop` must be an integer >= 1. Received: epochs_drop=0``.
    """


class StoreWriteError(OSError):
    """The results store cannot be written as a launch runs (a full disk, a folder made
    read-only or replaced by a file, an object store's credentials gone): the run stops,
    what Tune saved goes on with `--resume` once the store can be written."""


_warned = set()


def warn(message):
    """One line on stderr, once per command: a command reading a table twice (`epochs` reads
    `trials` too) names a bad file once."""
    if message not in _warned:
        _warned.add(message)
        print(f"lrsweep: warning: {message}", file=sys.stderr)
