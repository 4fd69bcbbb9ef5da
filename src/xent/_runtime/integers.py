"""The integer check every argument that must be an integer goes through.

It lives here, below both layers, because `set_num_threads` (in this package) and
the validation of the Python API (xent._api, which imports this package) both use it.
"""

import operator

import numpy as np


def as_integer(value, name, expected="an integer"):
    """`value` as a Python int (anything with ``__index__``); for anything else, bools
    included (True is not a count, an axis or an index), TypeError
    "`name`: expected `expected`, got `value`" (built only then: this runs on every call)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected {expected}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected {expected}, got {value!r}") from None
