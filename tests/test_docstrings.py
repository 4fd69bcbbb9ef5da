"""The examples in the public functions' docstrings run and print what they say."""

import doctest

import pytest

import xent

PUBLIC = [name for name in xent.__all__ if callable(getattr(xent, name))]


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples(name, capsys):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder().find(getattr(xent, name), name, globs={})
    for test in tests:
        runner.run(test)
    report = capsys.readouterr().out
    assert runner.failures == 0, report
