"""Host memory of converting the real Wan2.1 T2V-1.3B DiT (random weights) with `convert_torch_weights.py`.

  python bench/convert.py [--work-dir DIR]

Writes a random-weight diffusers `WanTransformer3DModel` directory (float32 safetensors, 5.7 GB), converts it to
our Orbax checkpoint in a fresh process under `/usr/bin/time -v`, and prints the peak resident memory next to the
source and target sizes. Needs about 12 GB of free disk in the work directory (deleted afterwards).
"""

import argparse
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

GB = 1e9
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffst_jax import cli  # noqa: E402  pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--work-dir", default=None, help="where to write the temporary source and output")
  args = parser.parse_args()

  import diffusers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  work = pathlib.Path(tempfile.mkdtemp(dir=args.work_dir))
  try:
    torch.manual_seed(0)
    reference = diffusers.WanTransformer3DModel(num_attention_heads=12, ffn_dim=8960, num_layers=30)
    reference.save_pretrained(work / "source", max_shard_size="2GB")
    del reference
    source_bytes = sum(f.stat().st_size for f in (work / "source").glob("*.safetensors"))
    command = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "convert_torch_weights.py"),
               "--dit", str(work / "source"), "--out", str(work / "ours")]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    target_bytes = sum(f.stat().st_size for f in (work / "ours").rglob("*") if f.is_file())
  finally:
    shutil.rmtree(work)
  print("Converting Wan2.1 T2V-1.3B (diffusers layout, 3 float32 safetensors shards) to our Orbax checkpoint")
  print("| measure | value |")
  print("|---|---:|")
  print(f"| source on disk | {source_bytes / GB:.2f} GB |")
  print(f"| our checkpoint on disk | {target_bytes / GB:.2f} GB |")
  print(f"| peak resident memory of the converter | {peak_kb * 1024 / GB:.2f} GB |")
  print(f"| wall time | {seconds:.0f} s |")


if __name__ == "__main__":
  cli.script(main)
