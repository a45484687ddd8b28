"""Noise kept out of a user's terminal. TensorFlow's C++ start-up lines (absl, oneDNN, CUDA
probes) ignore TF_CPP_MIN_LOG_LEVEL: they are written straight to file descriptor 2, so only
a redirect of it silences them. And the traceback of a trial's actor that Ray ends with
SIGTERM (`quiet_termination`), and a logger's notes for a while (`errors_only`)."""

import contextlib
import functools
import logging
import os
import sys


@contextlib.contextmanager
def errors_only(name):
    """Only errors from the logger `name` within; its own level again after."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def quiet_stderr():
    """What is written to file descriptor 2 inside the block is kept back, and written out
    after it only if the block raises an error: an import that fails has often said why
    there first (NumPy's ABI, a missing library), and the exception alone would not. Not on
    Ctrl-C or an exit (Ray's SIGTERM to a worker), which stop an import that was going well."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield
        except Exception:
            os.dup2(saved, 2)
            kept.seek(0)
            os.write(2, kept.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def discard(stream):
    """`stream`'s reader has gone (`| head`): what is written to it from here on goes nowhere,
    with no second error (as Python flushes it at exit, or Ray's threads print)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def import_tensorflow():
    """Import TensorFlow (and so Keras' backend) for the command line's own use (schedule
    values, no training), without its start-up lines and without the GPUs: TensorFlow
    would reserve most of a card's memory that the trials of a launch from this same
    process need. Once only."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with quiet_stderr():
            import tensorflow as tf

            tf.config.set_visible_devices([], "GPU")


def import_keras():
    """Keras (and TensorFlow) imported without TensorFlow's start-up lines, for a download
    through Keras' utilities; the devices are left alone (`find-lr` trains on them in this
    process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import keras
    return keras


def _drop_exits(unraisable, _previous=None):
    if not issubclass(unraisable.exc_type, SystemExit):
        (_previous or sys.__unraisablehook__)(unraisable)


def quiet_termination():
    """As Tune ends a trial it removes the trial's placement group, and Ray then sends the
    trial's actor SIGTERM. Ray's handler raises SystemExit in whatever Python code the
    actor's main thread runs next; where that is a weakref callback, Python cannot raise it
    and prints "Exception ignored in ... SystemExit: 1" with a traceback, which Ray copies
    into the launch's output at random (ray-project/ray#13487). Such an exit is dropped
    here; every other exception Python cannot raise is still printed. Once per process."""
    if getattr(sys.unraisablehook, "func", None) is not _drop_exits:
        sys.unraisablehook = functools.partial(_drop_exits, _previous=sys.unraisablehook)
