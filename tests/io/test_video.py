"""Reading videos cut short: fewer frames decode than the container declares (a count, or a duration), and it is
said with both numbers."""

import av
import numpy as np
import pytest

from diffst_jax.io import video
from tests.conftest import ROOT

CLIP = ROOT / "tests" / "assets" / "carphone_distorted_9.mp4"


@pytest.mark.parametrize("container, suffix, declared", [("avi", "avi", "27"), ("matroska", "mkv", "about 27")])
def test_a_video_cut_short_is_said_with_both_counts(tmp_path, capsys, container, suffix, declared):
  whole = tmp_path / f"whole.{suffix}"
  with av.open(str(whole), "w", format=container) as output:
    stream = output.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt, stream.options = 64, 48, "yuv420p", {"g": "1"}  # all key frames
    for frame in np.concatenate([video.read_video(CLIP)[0]] * 3):
      output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    output.mux(stream.encode())
  assert video.probe(whole).frames == 27 and capsys.readouterr().err == ""
  cut = tmp_path / f"cut.{suffix}"
  cut.write_bytes(whole.read_bytes()[:int(0.6 * whole.stat().st_size)])
  frames = video.probe(cut).frames
  assert 0 < frames < 27
  assert capsys.readouterr().err.strip() == (f"warning: {cut}: the file declares {declared} frames but only {frames} "
                                             f"decode; it is cut short or damaged, and only those {frames} frames "
                                             "are used")
