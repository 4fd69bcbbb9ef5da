"""The ``xent`` command line (also ``python -m xent``).

Subcommands
-----------
``xent bench [--quick] [--threads T] [--repeat R] [--only logits|hidden] [--json FILE]
[--plot FILE.png]``
    Time xent against NumPy (and SciPy / PyTorch when installed); see :mod:`xent._cli.bench`,
    and the cross-entropy from hidden states (:mod:`xent._cli.bench_linear`).
``xent eval LOGITS TARGET [--axis A] [--ignore-index I] [-k 1 5] [--batch-rows N] [--json]``
    Loss, perplexity and top-k accuracy of memory-mapped ``.npy`` files, streamed in
    batches; see :mod:`xent._cli.eval`.
``xent eval HIDDEN TARGET --linear-weight W.npy [--linear-bias B.npy] [--softcap S] ...``
    The same from hidden states through a classifier layer, the logits never held.

Every error, from a bad argument to a failure while running, is reported as one
line on stderr with exit status 2 -- never a traceback.  ``xent eval`` on files
where no row counts (empty, or every target ignored) prints its undefined
results (nan, null with ``--json``) and count 0, warns on stderr, and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["CommandError", "build_parser", "main"]


class CommandError(Exception):
    """An error shown to the user as one line on stderr (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors become :class:`CommandError` (one line)."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise CommandError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _check_output_path(option: str, path: str) -> None:
    """Fail before a long run, not after it, if ``path`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CommandError(f"xent bench: error: {option}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise CommandError(f"xent bench: error: {option}: {path!r} is a directory")


# --------------------------------------------------------------------------- bench


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time xent against NumPy (and SciPy / PyTorch when installed)",
        description=(
            "Time xent's functions (normalizers, cross_entropy with and without its "
            "gradient, binary_cross_entropy_with_logits, a float16 and a small-call "
            "cross_entropy) against their plain NumPy formulas, SciPy and PyTorch (when "
            "installed, with xent's thread count) on standard shapes, and print times, "
            "GB/s, time relative to one read of the inputs (np.max) and xent's speed-up; "
            "then linear_cross_entropy and evaluate from hidden states against the matrix "
            "product alone and PyTorch's F.linear_cross_entropy (in a process of its own), "
            "with the peak extra memory of each call."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small shapes and few repeats: finishes in seconds (a smoke test)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        metavar="T",
        help="thread count for xent (and PyTorch) during the run (default: unchanged)",
    )
    p.add_argument(
        "--repeat",
        type=_positive_int,
        metavar="R",
        help="timed calls per implementation, median reported (default 5, 3 with --quick; "
             "3 for the hidden-state cases)",
    )
    p.add_argument(
        "--only",
        choices=("logits", "hidden"),
        help="only the cases on logits, or only the cross-entropy from hidden states "
             "(default: both)",
    )
    p.add_argument("--json", metavar="FILE", help="write all results and machine info as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="save a bar chart of the cases on logits (needs matplotlib)")
    p.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from xent._cli import bench

    if args.plot is not None:
        try:
            bench.require_matplotlib()
        except ImportError:
            raise CommandError(
                "xent bench: error: --plot needs matplotlib: pip install matplotlib"
            ) from None
        _check_output_path("--plot", args.plot)
    if args.json is not None:
        _check_output_path("--json", args.json)

    repeat = args.repeat or (bench.QUICK_REPEAT if args.quick else bench.DEFAULT_REPEAT)
    info = bench.machine_info()
    with bench.thread_count(args.threads) as threads:
        pass  # what xent will really use with --threads (e.g. 1 without OpenMP)
    header = bench.format_header(info, threads=threads, repeat=repeat).splitlines()
    # Without the cases on logits, their lines on timing and the floor do not apply.
    print("\n".join(header[:2] if args.only == "hidden" else header))

    results: list[dict] = []
    if args.only != "hidden":
        results = _bench_logits(bench, args, repeat)
    hidden = None
    if args.only != "logits":
        hidden = _bench_hidden_states(args, info)
    if args.json is not None:
        bench.write_json(
            args.json, results, info, hidden_states=hidden, quick=args.quick,
            repeat=repeat, threads=threads, **({"only": args.only} if args.only else {}),
        )
        print(f"\nwrote {args.json}")
    if args.plot is not None and results:
        bench.plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _bench_logits(bench, args: argparse.Namespace, repeat: int) -> list[dict]:
    """The cases on logits: their table, printed case by case, and their rows."""
    cases = bench.default_cases(quick=args.quick)
    table = bench.Table(cases)
    print()
    print(table.header(), flush=True)

    def show(case: bench.Case, rows: list[dict]) -> None:
        print(table.rows(rows) if rows else table.skipped(case), flush=True)

    results = bench.run(
        quick=args.quick, threads=args.threads, repeat=repeat, cases=cases, on_case=show
    )
    comparisons = bench.dtype_comparisons(results)
    if comparisons:
        print()
        print("\n".join(comparisons))
    return results


def _bench_hidden_states(args: argparse.Namespace, info) -> list[dict]:
    """The cross-entropy from hidden states: its table, printed shape by shape."""
    from xent._cli import bench_linear

    repeat = args.repeat or bench_linear.HIDDEN_REPEAT
    table = bench_linear.Table()
    print()
    print(bench_linear.describe(repeat, info["torch"] is not None))
    print()
    print(table.header(), flush=True)

    def show(shape: tuple[int, ...], rows: list[dict]) -> None:
        print(table.rows(rows), flush=True)

    return bench_linear.run(
        quick=args.quick, threads=args.threads, repeat=repeat, on_shape=show
    )


# --------------------------------------------------------------------------- eval


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="loss, perplexity and top-k accuracy of logits (or hidden states) in a .npy file",
        description=(
            "Evaluate logits (a .npy file) against integer class indices (a .npy file "
            "with the logits' shape without the class axis): mean cross-entropy, "
            "perplexity, top-k accuracy and the number of rows, over the rows whose "
            "target is not --ignore-index.  Both files are memory-mapped and streamed "
            "in batches, so files larger than RAM work; a progress bar is shown on a "
            "terminal when tqdm is installed (pip install 'xent[progress]').  With "
            "--linear-weight W.npy the first file holds hidden states (..., D) instead "
            "and the logits are those of the classifier layer h @ W.T + b (capped as "
            "S*tanh(z/S) with --softcap S), made block by block and never held: a "
            "language model is evaluated from its stored hidden states, C/D times "
            "smaller than its logits."
        ),
        epilog=(
            "When no row counts -- the files have no rows, or every target equals "
            "--ignore-index -- the loss, perplexity and accuracies are undefined: they "
            "are printed as nan (null with --json) with count 0, a warning saying why "
            "goes to stderr, and the exit status is still 0 (an empty shard of a larger "
            "evaluation is not an error; its count of 0 merges correctly).  Errors "
            "(missing or malformed files, shape mismatches, a class index out of range) "
            "exit with status 2."
        ),
    )
    p.add_argument("logits", metavar="LOGITS", help=".npy file of logits (float, int or bool)")
    p.add_argument("target", metavar="TARGET", help=".npy file of integer class indices")
    p.add_argument("--axis", type=_int, default=-1, metavar="A",
                   help="the class axis of LOGITS (default: -1, the last)")
    p.add_argument("--ignore-index", type=_int, default=-100, metavar="I",
                   help="targets equal to I are left out (default: -100)")
    p.add_argument("-k", type=_positive_int, nargs="+", default=[1, 5], metavar="K",
                   help="the k of the top-k accuracies (default: 1 5)")
    p.add_argument("--batch-rows", type=_positive_int, metavar="N",
                   help="entries of LOGITS' leading axis per batch (default: ~64 MiB of "
                        "logits; with --linear-weight, whole blocks of the head's rows, "
                        "~16 MiB of hidden states)")
    p.add_argument("--linear-weight", metavar="W.npy",
                   help="the classifier layer's weight (C, D): LOGITS is then hidden states "
                        "(..., D) and TARGET has their shape without D")
    p.add_argument("--linear-bias", metavar="B.npy",
                   help="the classifier layer's bias (C,) (with --linear-weight)")
    p.add_argument("--softcap", type=float, metavar="S",
                   help="cap the logits as S*tanh(z/S), S > 0 (with --linear-weight; Gemma 2)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object {loss, perplexity, accuracy: {k: value}, count} "
                        "(NaN and infinities as null)")
    p.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from xent._cli.eval import as_json, evaluate_npy, format_plain, no_rows_warning

    hidden = args.linear_weight is not None
    try:
        result = evaluate_npy(
            args.logits, args.target, axis=args.axis, ignore_index=args.ignore_index,
            k=args.k, batch_rows=args.batch_rows, progress=True,
            logits_name="HIDDEN" if hidden else "LOGITS",
            linear_weight_path=args.linear_weight, linear_bias_path=args.linear_bias,
            softcap=args.softcap,
        )
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise CommandError(f"xent eval: error: {exc}") from None
    if args.json:
        print(json.dumps(as_json(result)))
    else:
        print(format_plain(result))
    if result.count == 0:
        print(no_rows_warning(args.target, args.ignore_index), file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- main

#: One entry per subcommand: a function adding its parser (with ``handler`` set).
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_bench, _add_eval)


def build_parser() -> argparse.ArgumentParser:
    """The ``xent`` argument parser, with one subparser per subcommand.

    Returns
    -------
    argparse.ArgumentParser
        Usage errors raise :class:`CommandError` instead of exiting.
    """
    from xent import __version__

    parser = _Parser(
        prog="xent",
        description="Fast softmax / cross-entropy kernels for NumPy arrays.",
    )
    parser.add_argument("--version", action="version", version=f"xent {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xent`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on any error (reported as one line on stderr),
        1 when stdout is closed early (e.g. piped into ``head``), 130 when interrupted.

    Examples
    --------
    >>> main(["bench", "--threads", "0"])  # doctest: +SKIP
    xent bench: error: argument --threads: must be a positive integer, got '0' ...
    2
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.handler(args)
    except CommandError as exc:
        print(_one_line(str(exc)), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into e.g. `head`, which exited: stop quietly (Python docs'
        # recipe: point stdout at devnull so the flush at exit does not fail again).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("xent: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:
        message = _one_line(str(exc)) or "(no message)"
        print(f"xent: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 2
