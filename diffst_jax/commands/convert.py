"""Converts PyTorch checkpoints (original Wan2.1 layout or diffusers) into diffst-jax Orbax checkpoints, and back.

  python convert_torch_weights.py --vae Wan2.1_VAE.pth --out checkpoints/wan21_vae
  python convert_torch_weights.py --dit Wan2.1-T2V-1.3B/ --out checkpoints/wan21_t2v_1_3b
  python convert_torch_weights.py --dit model.safetensors.index.json --out checkpoints/wan21_t2v_14b
  python convert_torch_weights.py --vae checkpoints/wan21_vae --out exported/vae --to diffusers

Sources: original Wan2.1 files (.pth, .safetensors, sharded with an index; `model.diffusion_model.` prefixes are
stripped), diffusers model directories (config.json + safetensors), or (with --to diffusers) our checkpoints.
The output directory must not exist or be empty (or hold a conversion that was cut short, which is redone): nothing
is ever overwritten.
"""

import argparse
import sys

from diffst_jax import cli
from diffst_jax.convert import dit as convert_dit
from diffst_jax.convert import loader
from diffst_jax.convert import vae as convert_vae
from diffst_jax.io import outputs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--vae", help="a Wan2.1 VAE source")
  source.add_argument("--dit", help="a Wan2.1 DiT (T2V-1.3B or 14B) source")
  parser.add_argument("--out", required=True, help="new output directory")
  parser.add_argument("--to", choices=("orbax", "diffusers"), default="orbax",
                      help="orbax: our checkpoint (default); diffusers: a diffusers model directory")
  parser.add_argument("--param-dtype", choices=("float32", "bfloat16"), default=None,
                      help="parameter dtype of the output (default: float32); bfloat16 halves the memory needed")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)
  overrides = {"param_dtype": args.param_dtype} if args.param_dtype else {}
  spec, path = (convert_vae.SPEC, args.vae) if args.vae else (convert_dit.SPEC, args.dit)

  def convert() -> str:
    outputs.check_destination(args.out, [path], folder=True)
    if args.to == "orbax":
      return f"wrote {loader.convert(spec, path, args.out, **overrides)}"
    outputs.check_new_folder(args.out, "--out")
    return f"wrote {loader.export_diffusers(spec, loader.load(spec, path, **overrides), args.out)}"

  return cli.run(cli.program_name("convert_torch_weights.py", "diffst-convert"), convert, args.debug)


if __name__ == "__main__":
  sys.exit(main())
