"""What every command line shares: one rule for failures, one spelling of flags.

Exit codes: 0 done; 1 the work ran and part of it failed, as its summary says (a video of a set, a trial of a
sweep); 2 bad input: a flag, file, folder or destination that cannot be used, said in one line `PROG: error: ...`
on stderr, before any work wherever it can be checked first (argparse's usage errors are 2 as well); 130
interrupted (Ctrl-C), one line. `--debug` shows the traceback instead of the line.

Flags are spelled with dashes (`--coordinator-address`, `--export-to`); train.py, whose absl flags are spelled with
underscores, accepts the dashed spelling too.
"""

import pathlib
import sys
from collections.abc import Callable
from typing import NoReturn

DONE, PART_FAILED, BAD_INPUT, INTERRUPTED = 0, 1, 2, 130


def program_name(script: str = "", command: str = "") -> str:
  """How the running command line was called: `command` (e.g. diffst-upscale) when installed and called so, else
  `script` (e.g. infer.py); without them, the running script's file name."""
  called = pathlib.Path(sys.argv[0]).name
  return command if called == command else script or called


def first_line(error: BaseException) -> str:
  """An exception's message as one line (its type's name when it has none)."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def run(prog: str, work: Callable[[], int | str | None], debug: bool,
        interrupted: str = "interrupted") -> int:
  """Runs a command line's `work` and returns its exit code: what it returns (an int; a str is printed and means
  DONE; None is DONE), BAD_INPUT for a ValueError or OSError, INTERRUPTED for Ctrl-C, each said in one line."""
  try:
    result = work()
  except KeyboardInterrupt:
    if debug:
      raise
    print(f"{prog}: error: {interrupted}", file=sys.stderr)
    return INTERRUPTED
  except (ValueError, OSError) as e:
    if debug:
      raise
    print(f"{prog}: error: {first_line(e)}", file=sys.stderr)
    return BAD_INPUT
  if isinstance(result, str):
    print(result)
    return DONE
  return DONE if result is None else result


def script(main: Callable[[], int | str | None]) -> NoReturn:
  """The `__main__` of a tool or benchmark whose own flags have no --debug: `main` under `run`, a --debug taken off
  the command line first."""
  debug = "--debug" in sys.argv[1:]
  if debug:
    sys.argv.remove("--debug")
  sys.exit(run(program_name(), main, debug))
