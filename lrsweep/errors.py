"""The one error type for bad input, which `__main__` prints as one line and exits 2; the
store that cannot be written mid-run, which `launch` prints as one line and exits 1; and
the one-line warning, for what goes on but the user should know."""

import contextlib
import json
import os
import sys


class LrsweepError(ValueError):
    """Bad input from the user: a sweep file, a flag, a parameter, a dataset file.

    The message names the field and the value it got, in Keras' words:
    ``Argument `epochs_drop` must be an integer >= 1. Received: epochs_drop=0``.
    """


def shown(value):
    """`value` as a bad-input line shows it: its repr, an integer of hundreds of digits (a
    sweep file's 10**400) cut short, and a text's line breaks escaped (the repr does that)."""
    text = repr(value)
    if isinstance(value, int) and len(text) > 30:
        return f"{text[:12]}... ({len(text)} digits)"
    return text


class StoreWriteError(OSError):
    """The results store cannot be written as a launch runs (a full disk, a folder made
    read-only or replaced by a file, an object store's credentials gone): the run stops,
    what Tune saved goes on with `--resume` once the store can be written."""


class StoreUnreachable(LrsweepError, OSError):
    """A store's `s3://`/`gs://` URI that cannot be opened (no such bucket, no credentials,
    no network): a command reading it says so in one line; a launch writing it stops as on
    any error writing the store (an OSError)."""


# The environment variable of a launch that runs for a command which has given these
# warnings (JSON, a list): a launch through Ray Client, whose output that command prints.
SAID = "LRSWEEP_WARNINGS_SAID"


def _said_before():
    """The warnings the command this launch runs for has given (`SAID`)."""
    try:
        said = json.loads(os.environ.get(SAID) or "[]")
    except ValueError:
        said = []
    return {message for message in said if isinstance(message, str)} if isinstance(said, list) else set()


_warned = _said_before()
_held = None  # the warnings of a command checking its input, said once all of it passed


def warn(message):
    """One line on stderr, once per command: a command reading a table twice (`epochs` reads
    `trials` too) names a bad file once."""
    if message in _warned:
        return
    if _held is not None:
        if message not in _held:
            _held.append(message)
        return
    _warned.add(message)
    print(f"lrsweep: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def checking(say=True):
    """Hold back the warnings given within (a `--max-epochs` that narrows a range) until the
    block ends; then say them, unless it ended with an error, which is then the command's one
    line (bad input found after a warning: a dataset file that is not there). `say=False`:
    leave them to the run the command hands its input on to, which checks it again and says
    them where this command prints them (a followed `submit`: the job's output)."""
    global _held
    outer, _held = _held, []
    try:
        yield
        held = _held
    finally:
        _held = outer
    for message in held if say else ():
        warn(message)


def say_held(about):
    """Say at once the warnings held so far (`checking`) that name the folder `about` or what
    it holds: those that explain the error coming next (a dataset whose every file was
    skipped as unreadable, or whose folder could not be listed); the others stay held."""
    global _held

    def names(message):
        return f"{about}/" in message or f"{about}:" in message

    held, _held = _held, None
    try:
        for message in held or ():
            if names(message):
                warn(message)
    finally:
        _held = None if held is None else [message for message in held if not names(message)]


def said():
    """The warnings this command has given (`SAID`)."""
    return sorted(_warned)
