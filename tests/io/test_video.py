"""Reading videos: cut short (fewer frames decode than the container declares, a count or a duration) it is said
with both numbers; what is not kept (a variable rate, more than 8 bits, HDR) is said; rates stay exact."""

import fractions

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


@pytest.mark.parametrize("text, rate", [
    ("25", 25), ("30000/1001", fractions.Fraction(30000, 1001)), ("29.97", fractions.Fraction(30000, 1001)),
    ("23.976", fractions.Fraction(24000, 1001)), ("12.5", fractions.Fraction(25, 2))])
def test_frame_rates_are_kept_exact(text, rate):
  assert video.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-25", "1/0"])
def test_bad_frame_rates_are_named(text):
  with pytest.raises(video.VideoError, match=f"--fps {text}:"):
    video.parse_rate(text)


def _write(path, pix_fmt: str, times_ms=None, color_trc=None):
  with av.open(str(path), "w", format="matroska") as output:
    stream = output.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
    if color_trc:
      stream.codec_context.color_trc = color_trc
    stream.codec_context.time_base = fractions.Fraction(1, 1000)
    for i, frame in enumerate(video.read_video(CLIP)[0]):
      picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)
      picture.pts, picture.time_base = (times_ms[i] if times_ms else 40 * i), fractions.Fraction(1, 1000)
      output.mux(stream.encode(picture))
    output.mux(stream.encode())


def test_what_is_not_kept_is_said(tmp_path, capsys):
  _write(tmp_path / "plain.mkv", "yuv420p")
  video.probe(tmp_path / "plain.mkv")
  assert capsys.readouterr().err == ""
  _write(tmp_path / "deep.mkv", "yuv420p10le")
  video.probe(tmp_path / "deep.mkv")
  assert "has 10-bit samples; it is converted to 8-bit BT.709" in capsys.readouterr().err
  _write(tmp_path / "hdr.mkv", "yuv420p10le", color_trc=16)
  video.probe(tmp_path / "hdr.mkv")
  assert "10-bit samples and an HDR transfer (PQ (SMPTE 2084))" in capsys.readouterr().err
  _write(tmp_path / "variable.mkv", "yuv420p", times_ms=[0, 40, 80, 100, 200, 240, 280, 290, 400])
  video.probe(tmp_path / "variable.mkv")
  assert "the frame rate varies (frames 10.0 to 110.0 ms apart); it is treated as constant" in capsys.readouterr().err


@pytest.mark.parametrize("container, codec, kept, copied", [("mp4", "aac", "aac", True),
                                                            ("mov", "pcm_s16le", "aac", False),
                                                            ("matroska", "libopus", "opus", True)])
def test_audio_goes_into_the_mp4_copied_or_as_aac(tmp_path, container, codec, kept, copied):
  """What an .mp4 takes is copied packet for packet; what it cannot hold (PCM from a .mov) is encoded to AAC."""
  source = tmp_path / f"source.{container}"
  frames = video.read_video(CLIP)[0]
  rate = 48000
  with av.open(str(source), "w", format=container) as output:
    picture = output.add_stream("libx264", rate=25)
    picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
    sound = output.add_stream(codec, rate=rate)
    sound.layout = "mono"
    for frame in frames:
      output.mux(picture.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    output.mux(picture.encode())
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * len(frames) / 25)) / rate)).astype(np.float32)
    size = sound.codec_context.frame_size or 1024
    resampler = av.AudioResampler(format=sound.codec_context.format, layout="mono", rate=rate)
    for start in range(0, tone.size, size):
      chunk = av.AudioFrame.from_ndarray(tone[None, start:start + size], format="flt", layout="mono")
      chunk.sample_rate = rate
      for resampled in resampler.resample(chunk):
        output.mux(sound.encode(resampled))
    output.mux(sound.encode())
  out = video.write_video(tmp_path / "out.mp4", frames, 25, audio_from=source)
  with av.open(str(out)) as written, av.open(str(source)) as original:
    track = written.streams.audio[0]
    assert track.codec_context.name == kept
    seconds = float(track.duration * track.time_base) if track.duration else float(written.duration / av.time_base)
    assert abs(seconds - len(frames) / 25) < 2 / 25
    if copied:
      packets = [bytes(packet) for packet in written.demux(track) if packet.size]
      assert packets == [bytes(packet) for packet in original.demux(original.streams.audio[0]) if packet.size]


def test_a_video_is_decoded_once_its_probe_decodes_only_the_first_frame(monkeypatch):
  decoded = []
  real = video._decoded  # pylint: disable=protected-access

  def counting(*args, **kwargs):
    for frame in real(*args, **kwargs):
      decoded.append(frame)
      yield frame

  monkeypatch.setattr(video, "_decoded", counting)
  info = video.probe(CLIP)
  assert len(decoded) == 1  # the frame count is the container's packets
  frames = list(video.iter_frames(CLIP))
  assert len(frames) == info.frames == 9 and len(decoded) == 1 + 9
