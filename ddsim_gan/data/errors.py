"""The one error the data layer raises for input it cannot use."""

from __future__ import annotations


class DataFormatError(ValueError):
    """An input file that is missing, unreadable or invalid.

    The message names the file, the dataset and, for bad values, the first offending row, e.g.
    ``"run1.h5: dataset 'samples' row 17 contains NaN"``.
    """


__all__ = ["DataFormatError"]
