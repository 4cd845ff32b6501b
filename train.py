"""The command line diffst_jax/commands/train.py (`diffst-train` once installed), run from a checkout."""

import sys

from diffst_jax.commands.train import main

if __name__ == "__main__":
  sys.exit(main())
