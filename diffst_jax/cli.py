"""What the command-line tools share: an expected failure is one line naming what was wrong, not a traceback."""

import sys
from collections.abc import Callable


def one_line_errors(run: Callable[[], str], debug: bool, code: int = 1) -> int:
  """Runs `run` and prints the line it returns; a ValueError or OSError (bad input, a file that cannot be read or
  written) becomes `error: ` and its first line on stderr, and exit code `code`; with `debug` it propagates."""
  try:
    print(run())
  except (ValueError, OSError) as e:
    if debug:
      raise
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return code
  return 0
