"""report.html of an evaluation: what a person opens to watch the results, from disk, with no server.

It holds the score table (the mean of each method over the clips), and for each clip a plot of every method's PSNR
per frame (the frames no input shows marked), the ground truth and every method's output side by side as videos
that play in sync under one set of controls (play, pause, a frame slider and the frame number), and a comparison
slider that wipes between two of them on one picture (the left one shown over the right one). Every link is relative:
the folder can be moved or copied whole. The videos are H.264 .mp4 files (io/video.py's writer), in report/CLIP/.
"""

import html
import json
import pathlib
import re
from collections.abc import Mapping

import matplotlib
import numpy as np

from diffst_jax.eval import metrics
from diffst_jax.io import video

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

FILE = "report.html"
FOLDER = "report"
GROUND_TRUTH = "ground truth"
# The table's columns: (score key, heading); a key a run did not compute is left out.
COLUMNS = (("psnr", "PSNR (dB)"), ("psnr_y", "PSNR Y (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS"),
           ("dists", "DISTS"), ("tof", "tOF"), ("tlp", "tLP"), ("psnr_between", "PSNR made frames (dB)"),
           ("colour", "colour offset"))


def slug(name: str) -> str:
  """A file name for a method's name: lower case, runs of anything but letters and digits as one dash."""
  return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "method"


def write(folder: pathlib.Path, title: str, results: Mapping[str, dict],
          outputs_by_clip: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
          rates: Mapping[str, float], time_scale: int, crop_border: int = 0) -> pathlib.Path:
  """Writes folder/report.html and folder/report/: `results` as evaluate's scores ({method: {"mean": scores}}),
  `outputs_by_clip` {clip: (ground truth, {method: output})} (uint8 T, H, W, 3), `rates` the ground truth's frames
  per second of each clip; the PSNR plot leaves `crop_border` pixels out on each side, as the scores do."""
  sections = []
  for clip_name, (hr, by_method) in outputs_by_clip.items():
    clip_folder = folder / FOLDER / slug(clip_name)
    clip_folder.mkdir(parents=True)
    shown, rate = {GROUND_TRUTH: hr, **by_method}, rates[clip_name]
    for name, frames in shown.items():
      video.write_video(clip_folder / f"{slug(name)}.mp4", frames, rate)
    _plot_psnr(clip_folder / "psnr.png", clip_name, hr, by_method, time_scale, crop_border)
    sections.append(_clip_section(clip_name, list(shown), len(hr), rate))
  page = _PAGE.format(title=html.escape(title), table=_table(results), sections="\n".join(sections),
                      script=_SCRIPT)
  (folder / FILE).write_text(page, encoding="utf-8")
  return folder / FILE


def _table(results: Mapping[str, dict]) -> str:
  columns = [(key, heading) for key, heading in COLUMNS
             if any(key in result["mean"] for result in results.values())]
  head = "".join(f"<th>{html.escape(heading)}</th>" for _, heading in columns)
  rows = []
  for name, result in results.items():
    cells = "".join(f"<td>{result['mean'][key]:.4g}</td>" if key in result["mean"] else "<td></td>"
                    for key, _ in columns)
    rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
  return f"<table class=scores><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"


def _plot_psnr(path: pathlib.Path, clip_name: str, hr: np.ndarray, by_method: Mapping[str, np.ndarray],
               time_scale: int, crop_border: int) -> None:
  figure, axes = plt.subplots(figsize=(8, 3))
  for name, output in by_method.items():
    axes.plot([metrics.psnr(o, t, crop_border=crop_border) for o, t in zip(output, hr)], marker=".", label=name)
  for frame in range(len(hr)):
    if frame % time_scale:
      axes.axvspan(frame - 0.5, frame + 0.5, color="0.92", zorder=0)
  axes.set(xlabel="frame (shaded: made by the method, no input shows it)", ylabel="PSNR (dB)",
           title=f"{clip_name}: PSNR per frame")
  axes.legend(fontsize="small")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def _clip_section(clip_name: str, names: list[str], frames: int, rate: float) -> str:
  base = f"{FOLDER}/{slug(clip_name)}"
  tiles = "".join(f'<figure><video src="{base}/{slug(name)}.mp4" muted loop playsinline preload=auto></video>'
                  f"<figcaption>{html.escape(name)}</figcaption></figure>" for name in names)
  options = lambda chosen: "".join(  # noqa: E731
      f'<option value="{base}/{slug(name)}.mp4"{" selected" if name == chosen else ""}>{html.escape(name)}</option>'
      for name in names)
  settings = json.dumps({"frames": frames, "rate": rate})
  return f"""<section class=clip data-settings='{settings}'>
<h2>{html.escape(clip_name)}</h2>
<img src="{base}/psnr.png" alt="PSNR per frame of each method on {html.escape(clip_name)}">
<div class=controls><button class=play>play</button>
<input class=position type=range min=0 max={frames - 1} value=0 step=1 aria-label="frame">
<span class=frame>frame 1 / {frames}</span></div>
<div class=grid>{tiles}</div>
<h3>Compare</h3>
<div class=controls><select class=left>{options(names[-1])}</select> | <select class=right>{options(names[1])}</select>
<input class=wipe type=range min=0 max=100 value=50 aria-label="comparison"></div>
<div class=compare><video class=under muted loop playsinline preload=auto src="{base}/{slug(names[1])}.mp4"></video>
<video class=over muted loop playsinline preload=auto src="{base}/{slug(names[-1])}.mp4"></video></div>
</section>"""


_PAGE = """<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em 2em; }}
table.scores {{ border-collapse: collapse; }} table.scores td, table.scores th {{ border: 1px solid #ccc;
  padding: 2px 8px; text-align: right; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; }} figure {{ margin: 0; }}
figcaption {{ text-align: center; font-size: small; }}
video {{ image-rendering: pixelated; min-width: 256px; display: block; }}
.compare {{ position: relative; display: inline-block; }}
.compare video {{ width: 512px; }} .compare .over {{ position: absolute; top: 0; left: 0; }}
.controls {{ margin: 6px 0; }}
</style></head>
<body><h1>{title}</h1>
{table}
{sections}
<script>{script}</script>
</body></html>
"""

# One clock per clip: the first video's. Every other video of the clip follows it (set back in step when it drifts
# by more than half a frame); the frame number and slider show where it is.
_SCRIPT = """
for (const section of document.querySelectorAll("section.clip")) {
  const settings = JSON.parse(section.dataset.settings);
  const videos = [...section.querySelectorAll("video")];
  const clock = videos[0];
  const button = section.querySelector("button.play");
  const position = section.querySelector("input.position");
  const label = section.querySelector("span.frame");
  const frameOf = (time) => Math.min(settings.frames - 1, Math.floor(time * settings.rate + 1e-3));
  const follow = () => {
    for (const other of videos.slice(1)) {
      if (Math.abs(other.currentTime - clock.currentTime) > 0.5 / settings.rate) other.currentTime = clock.currentTime;
    }
    const frame = frameOf(clock.currentTime);
    position.value = frame;
    label.textContent = `frame ${frame + 1} / ${settings.frames}`;
    section.dataset.frame = frame + 1;
  };
  clock.addEventListener("timeupdate", follow);
  const play = () => Promise.all(videos.map((v) => v.play())).then(() => { button.textContent = "pause"; });
  const pause = () => { videos.forEach((v) => v.pause()); button.textContent = "play"; follow(); };
  button.addEventListener("click", () => (clock.paused ? play() : pause()));
  position.addEventListener("input", () => {
    pause();
    videos.forEach((v) => { v.currentTime = (Number(position.value) + 0.5) / settings.rate; });
    follow();
  });
  const ready = () => {
    section.dataset.ready = videos.filter((v) => v.readyState >= 2 && v.videoWidth > 0).length;
  };
  videos.forEach((v) => v.addEventListener("loadeddata", ready));
  const over = section.querySelector("video.over");
  const under = section.querySelector("video.under");
  const wipe = section.querySelector("input.wipe");
  const cut = () => { over.style.clipPath = `inset(0 ${100 - wipe.value}% 0 0)`; };
  wipe.addEventListener("input", cut);
  cut();
  section.querySelector("select.left").addEventListener("change", (e) => { over.src = e.target.value; play(); });
  section.querySelector("select.right").addEventListener("change", (e) => { under.src = e.target.value; play(); });
  play().catch(() => { button.textContent = "play"; });
}
"""
