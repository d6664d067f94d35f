"""How every tool (tools/*.py) ends: with its status, or with one line on stderr, never with a
traceback for something the user can fix or chose to stop.

    @cli.command()                      # main(argv) ends through cli.run()
    def main(argv: list[str] | None = None) -> int:
        args = parser.parse_args(argv)
        with cli.blame(args.recipe):    # a UserError that names no file gets the recipe's
            ...

    if __name__ == "__main__":
        sys.exit(main())

- a UserError prints `error: <source>: <field>: <problem>; fix: <fix>` and ends with EXIT_USER_ERROR;
- Ctrl-C (KeyboardInterrupt) prints `interrupted: nothing half-written is kept; fix: <how to go on>`
  (cli.interrupted() lets a tool say what is true for it) and ends with EXIT_INTERRUPTED, the
  status a shell gives a command that SIGINT ended;
- any other status main returns (75 = preempted, 1 = a check failed) passes through.

The decorator rather than `sys.exit(cli.run(main))` alone, so that tests calling main([...])
in-process see the status and the line a shell sees. Imports nothing but smolrecipe.errors, so
that a tool can import it before anything heavy; importing it also makes a Ctrl-C during the
tool's own (slow) imports the same one line (sys.excepthook, for KeyboardInterrupt only).
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from smolrecipe.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT


def interrupted(fix: str = "run the same command again to resume", problem: str = "nothing half-written is kept") -> UserError:
    """What a tool says when Ctrl-C ends it: `interrupted: <problem>; fix: <fix>` (the same format
    as every error)."""
    return UserError("interrupted", problem, fix)


INTERRUPTED = interrupted()


def _ctrl_c_before_main(kind, value, traceback) -> None:
    """sys.excepthook while a tool still imports (seconds, for some): Ctrl-C then is the same one
    line; Python still ends the process as SIGINT would (status 130). Everything else as before."""
    if issubclass(kind, KeyboardInterrupt):
        print(INTERRUPTED.line(), file=sys.stderr, flush=True)
    else:
        _previous_hook(kind, value, traceback)


_previous_hook = sys.excepthook
sys.excepthook = _ctrl_c_before_main


def _error_label() -> str:
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    return "\033[1;31merror\033[0m" if tty else "error"


def error_line(err: UserError) -> str:
    return f"{_error_label()}: {err.line()}"


def run(main: Callable[[], int | None], on_interrupt: UserError = INTERRUPTED) -> int:
    """main()'s exit status; a UserError or a Ctrl-C becomes one line on stderr and its own status."""
    try:
        return main() or 0
    except UserError as err:
        sys.stdout.flush()
        print(error_line(err), file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(on_interrupt.line(), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def command(on_interrupt: UserError = INTERRUPTED):
    """Decorator: a tool's main(argv=None) that ends through run()."""

    def wrap(main: Callable[[Sequence[str] | None], int | None]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(main)
        def wrapped(argv: Sequence[str] | None = None) -> int:
            return run(lambda: main(argv), on_interrupt)

        return wrapped

    return wrap


@contextmanager
def blame(source: str | os.PathLike | None) -> Iterator[None]:
    """Give a UserError raised inside the block `source` (the recipe or folder the tool was given)
    as the file it came from, unless it names one already."""
    try:
        yield
    except UserError as err:
        if err.source or not source:
            raise
        raise err.with_source(str(source)) from None
