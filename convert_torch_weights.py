"""Converts PyTorch checkpoints (original Wan2.1 layout or diffusers) into diffst-jax Orbax checkpoints, and back.

  python convert_torch_weights.py --vae Wan2.1_VAE.pth --out checkpoints/wan21_vae
  python convert_torch_weights.py --vae path/to/diffusers/vae --out checkpoints/wan21_vae
  python convert_torch_weights.py --vae checkpoints/wan21_vae --out exported/vae --to diffusers

The output directory must not exist or be empty: nothing is ever overwritten.
"""

import argparse
import sys

from diffst_jax.convert import vae as convert_vae
from diffst_jax.convert.torch_io import CheckpointError


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--vae", required=True,
                      help="Wan2.1 VAE: Wan2.1_VAE.pth, a diffusers AutoencoderKLWan directory or .safetensors "
                           "file, or (with --to diffusers) one of our checkpoints")
  parser.add_argument("--out", required=True, help="new output directory")
  parser.add_argument("--to", choices=("orbax", "diffusers"), default="orbax",
                      help="orbax: our checkpoint (default); diffusers: an AutoencoderKLWan directory")
  args = parser.parse_args(argv)
  try:
    if args.to == "orbax":
      out = convert_vae.convert(args.vae, args.out)
    else:
      out = convert_vae.export_diffusers(convert_vae.load_vae(args.vae), args.out)
  except (CheckpointError, FileExistsError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
