"""TensorFlow's C++ start-up lines (absl, oneDNN, CUDA probes) ignore TF_CPP_MIN_LOG_LEVEL:
they are written straight to file descriptor 2, so only a redirect of it silences them."""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 goes to /dev/null inside the block (Python's own errors raised in
    it still print, after the block)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
