"""The results store and what reads it: rank, query, best, plots. Never imports Ray."""

# What every trial reports per epoch, besides its rate: columns of `epochs`, and the best
# and final values in `trials`. Here, not in `store`, so that a trial's process (`run.trial`)
# reads it without importing pyarrow and pandas, which it has no use for (`store`).
LOGS = ("loss", "accuracy", "val_loss", "val_accuracy")
