"""Trains DiffST (or, for stage 0, its VAE) with a config file; rerunning on the same --workdir resumes.

  python train.py --config configs/tiny_vae.py --workdir runs/tiny_vae --config.data.videos=videos/
  python train.py --config configs/tiny.py --workdir runs/tiny --config.data.videos=videos/ \
      --config.init.vae=runs/tiny_vae/model

Any config field can be overridden with --config.FIELD=VALUE (ml_collections config flags). SIGTERM or Ctrl-C
saves a checkpoint and stops; the trained model is written to WORKDIR/model at the end (--export_to DIR writes the
latest checkpoint's, without training). --mesh spreads the run
over devices (e.g. --mesh data=2,fsdp=2,context=2,tensor=1); a run resumes on any mesh. Multi-host: start the same
command on every host with --coordinator-address, --num-processes and --process-id (or the JAX_* variables; the
underscored spellings work too). Exit codes and error lines: diffst_jax/cli.py.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from diffst_jax import shipped

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, the trained model")
flags.DEFINE_string("mesh", None, "device mesh, e.g. data=1,fsdp=2,context=4,tensor=1 (sets config.mesh)")
flags.DEFINE_string("coordinator_address", None, "multi-host: host:port of process 0 (or JAX_COORDINATOR_ADDRESS)")
flags.DEFINE_integer("num_processes", None, "multi-host: number of processes (or JAX_NUM_PROCESSES)")
flags.DEFINE_integer("process_id", None, "multi-host: this process's index (or JAX_PROCESS_ID)")
flags.DEFINE_enum("multihost", "auto", ["auto", "off"], "auto: join the processes of a detected cluster (TPU VM, "
                  "SLURM or Open MPI job of several tasks) as JAX finds them; off: one process")
flags.DEFINE_string("export_to", None, "instead of training: write the model of the run's latest checkpoint to this "
                    "new folder (the run may be going on), e.g. to evaluate it")
flags.DEFINE_bool("debug", False, "show tracebacks")
flags.mark_flags_as_required(["config", "workdir"])
for _name in ("coordinator_address", "num_processes", "process_id", "export_to"):  # the other tools' spelling
  flags.DEFINE_alias(_name.replace("_", "-"), _name)


def _run(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:  # absl's INFO lines (Orbax, JAX) come back with --verbosity=0
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel

  from diffst_jax import cli  # pylint: disable=import-outside-toplevel
  from diffst_jax.parallel import backend, distributed  # pylint: disable=import-outside-toplevel
  from diffst_jax.train import loop  # pylint: disable=import-outside-toplevel

  # A resumed run reuses the compiled programs of the interrupted one.
  backend.enable_compilation_cache()

  config, options = flags.FLAGS.config, flags.FLAGS
  if options.mesh is not None:
    config.mesh = options.mesh

  def work() -> str | None:
    distributed.initialize(options.coordinator_address, options.num_processes, options.process_id, options.multihost)
    if options.export_to:
      step = loop.export_checkpoint(config, options.workdir, options.export_to)
      return f"train.py: wrote the model of step {step} to {options.export_to}"
    loop.train(config, options.workdir)
    return None

  code = cli.run(cli.program_name("train.py", "diffst-train"), work, options.debug)
  if code:
    sys.exit(code)


def main(argv=None) -> int:
  """diffst-train: the flags of `argv` (default: sys.argv), a --config naming a shipped config found without a
  path (shipped.config_path); exits with the code of diffst_jax/cli.py."""
  argv = list(sys.argv if argv is None else argv)
  for index, arg in enumerate(argv):
    if arg.startswith("--config="):
      argv[index] = "--config=" + shipped.config_path(arg.removeprefix("--config="))
    elif arg == "--config" and index + 1 < len(argv):
      argv[index + 1] = shipped.config_path(argv[index + 1])
  app.run(_run, argv=argv)
  return 0


if __name__ == "__main__":
  sys.exit(main())
