"""The integer check every argument that must be an integer goes through.

It lives here, below both layers, because `set_num_threads` (in this package) and
the validation of the Python API (xent._api, which imports this package) both use it.
"""

import operator

import numpy as np


def as_integer(value, error):
    """`value` as a Python int (anything with ``__index__``); TypeError(`error`) for
    anything else, bools included (True is not a count, an axis or an index)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(error)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(error) from None
