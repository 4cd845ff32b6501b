"""The command line diffst_jax/commands/evaluate.py (`diffst-evaluate` once installed), run from a checkout."""

import sys

from diffst_jax.commands.evaluate import main

if __name__ == "__main__":
  sys.exit(main())
