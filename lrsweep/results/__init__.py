"""The results store and what reads it: rank, query, best, plots. Never imports Ray."""

# What every trial reports per epoch, besides its rate: columns of `epochs`, and the best
# and final values in `trials`. Here, not in `store`, so that a trial's process (`run.trial`)
# reads it without importing pyarrow and pandas, which it has no use for (`store`).
LOGS = ("loss", "accuracy", "val_loss", "val_accuracy")

# Where the store may live besides a folder: object stores, where one upload is atomic
# (`store.write_rows`); Tune's storage also in any folder pyarrow names by URI.
URI_SCHEMES = {"results": ("s3", "gs", "gcs"), "storage": ("s3", "gs", "gcs", "file")}


def location_error(path, field="results"):
    """None where `path` is a folder or a URI the `field` (results or storage) may be, with
    a bucket; else what it must be, for a bad-input line (pyarrow would fail on it once Ray
    had started)."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return None
    schemes = URI_SCHEMES[field]
    if scheme not in schemes:
        return f"a folder or a URI: {', '.join(f'{s}://' for s in schemes)}"
    if scheme == "file":
        return None if rest.startswith("/") else "a file:// URI of an absolute path (file:///PATH)"
    if not rest.split("/")[0]:
        return f"a URI that names a bucket ({scheme}://BUCKET/PATH)"
    return None
