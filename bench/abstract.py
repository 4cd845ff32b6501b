"""Making a model abstractly (shapes, no values), as every checkpoint load, conversion and compile starts: flax's
`nnx.eval_shape` against `models/abstract.abstract`, side by side, for the tiny default and the real 1.3B DiffST.

  python bench/abstract.py [--repeats 5]
"""

import argparse
import pathlib
import sys

from flax import nnx
from timing import median_seconds

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from diffst_jax import cli, config_files  # noqa: E402
from diffst_jax.models import diffst  # noqa: E402
from diffst_jax.models.abstract import abstract  # noqa: E402

CONFIGS = {"configs/tiny.py:near_identity": ("configs/tiny.py", "near_identity"),
           "configs/wan21_1_3b.py": ("configs/wan21_1_3b.py", None)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  root = pathlib.Path(__file__).resolve().parent.parent
  print("| model | nnx.eval_shape s | abstract s | ratio |\n|---|---:|---:|---:|")
  for name, (path, preset) in CONFIGS.items():
    config = diffst.DiffSTConfig.from_dict(config_files.load(root / path, preset).model.to_dict())
    plain = median_seconds(lambda: nnx.eval_shape(lambda: diffst.DiffST(config, rngs=nnx.Rngs(0))), args.repeats)
    ours = median_seconds(lambda: abstract(lambda rngs: diffst.DiffST(config, rngs=rngs)), args.repeats)
    print(f"| {name} | {plain:.3f} | {ours:.3f} | {plain / ours:.1f}x |", flush=True)


if __name__ == "__main__":
  cli.script(main)
