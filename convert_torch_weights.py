"""The command line diffst_jax/commands/convert.py (`diffst-convert` once installed), run from a checkout."""

import sys

from diffst_jax.commands.convert import main

if __name__ == "__main__":
  sys.exit(main())
