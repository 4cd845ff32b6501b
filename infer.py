"""The command line diffst_jax/commands/upscale.py (`diffst-upscale` once installed), run from a checkout."""

import sys

from diffst_jax.commands.upscale import main

if __name__ == "__main__":
  sys.exit(main())
