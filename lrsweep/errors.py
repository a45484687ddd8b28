"""The one error type for bad input: `__main__` prints it as one line and exits 2."""


class LrsweepError(ValueError):
    """Bad input from the user: a sweep file, a flag, a parameter, a dataset file.

    The message names the field and the value it got, in Keras' words:
    ``Argument `epochs_drop` must be an integer >= 1. Received: epochs_drop=0``.
    """
