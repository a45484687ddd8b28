"""The results store and what reads it: rank, query, best, plots. Never imports Ray."""

# What every trial reports per epoch, besides its rate: columns of `epochs`, and the best
# and final values in `trials`. Here, not in `store`, so that a trial's process (`run.trial`)
# reads it without importing pyarrow and pandas, which it has no use for (`store`).
LOGS = ("loss", "accuracy", "val_loss", "val_accuracy")

# Where the store (and Tune's storage) may live besides a folder: object stores, where one
# upload is atomic (`store.write_rows`).
URI_SCHEMES = ("s3", "gs")


def location_error(path):
    """None where `path` is a folder or an `s3://`/`gs://` URI with a bucket; else what it
    must be, for a bad-input line (pyarrow would fail on it once Ray had started)."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return None
    if scheme not in URI_SCHEMES:
        return f"a folder or an {' or '.join(f'{s}://' for s in URI_SCHEMES)} URI"
    if not rest.split("/")[0]:
        return f"a URI that names a bucket ({scheme}://BUCKET/PATH)"
    return None
