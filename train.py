"""Trains DiffST (or, for stage 0, its VAE) with a config file; rerunning on the same --workdir resumes.

  python train.py --config configs/tiny_vae.py --workdir runs/tiny_vae --config.data.videos=videos/
  python train.py --config configs/tiny.py --workdir runs/tiny --config.data.videos=videos/ \
      --config.init.vae=runs/tiny_vae/model

Any config field can be overridden with --config.FIELD=VALUE (ml_collections config flags). SIGTERM or Ctrl-C
saves a checkpoint and stops; the trained model is written to WORKDIR/model at the end.
"""

import os
import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, the trained model")
flags.DEFINE_bool("debug", False, "show tracebacks")
flags.mark_flags_as_required(["config", "workdir"])

CACHE_DIR = pathlib.Path.home() / ".cache" / "diffst_jax" / "xla"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax  # pylint: disable=import-outside-toplevel

  from diffst_jax.train import loop  # pylint: disable=import-outside-toplevel

  # A resumed run reuses the compiled programs of the interrupted one.
  jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", str(CACHE_DIR)))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

  try:
    loop.train(flags.FLAGS.config, flags.FLAGS.workdir)
  except (ValueError, OSError) as error:
    if flags.FLAGS.debug:
      raise
    print(f"train.py: error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
