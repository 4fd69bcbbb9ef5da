"""The ``xent`` command line: loaded only by ``xent``/``python -m xent``, never by ``import xent``.

main   argument parsing and the subcommands
eval   ``xent eval``: streamed evaluation of stored logits
bench  ``xent bench``: timings against NumPy, SciPy and PyTorch
"""
