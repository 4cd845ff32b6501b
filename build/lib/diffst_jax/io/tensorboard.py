"""TensorBoard event files through tensorboardX: imported without torch, and written to object storage (gs://, s3://,
az://) through io/paths.py, so that no cloud client library beyond fsspec's is needed."""

import io
import sys

from etils import epath

from diffst_jax.io import paths


class _RemoteEventFile:
  """An event file in a bucket, where objects cannot be appended to: kept in memory and uploaded whole at each flush
  (as tensorboardX's own gs:// writer does)."""

  def __init__(self, path: str):
    self._path, self._buffer = epath.Path(path), io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    self._path.write_bytes(self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _RemoteEventFiles:
  """tensorboardX's writer factory interface."""

  def open(self, path: str) -> _RemoteEventFile:
    return _RemoteEventFile(path)

  def directory_check(self, path: str) -> None:
    del path  # object storage has no folders to make


def summary_writer_class():
  """tensorboardX's SummaryWriter, imported with torch hidden: tensorboardX imports torch whenever it is installed
  (1.35 s and about 200 MB per start) only to accept torch tensors, which we never pass it."""
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX takes as "no torch"
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    from tensorboardX.record_writer import register_writer_factory  # pylint: disable=import-outside-toplevel
  finally:
    if hide_torch:
      del sys.modules["torch"]
  for scheme in paths.REMOTE_SCHEMES:
    register_writer_factory(scheme.removesuffix("://"), _RemoteEventFiles())
  return SummaryWriter
