"""Learning-rate schedule families: parameters checked in plain Python, built as Keras objects."""

from lrsweep.schedules.registry import (
    ADAPTIVE_OPTIMIZERS,
    FAMILIES,
    GRANULARITIES,
    OPTIMIZERS,
    build_schedule,
    check_schedule,
    family,
)

__all__ = ["ADAPTIVE_OPTIMIZERS", "FAMILIES", "GRANULARITIES", "OPTIMIZERS", "build_schedule",
           "check_schedule", "family"]
