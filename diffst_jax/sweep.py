"""Ablation sweeps: each trial trains (train.py) then scores (evaluate.py) one set of config overrides.

  python -m diffst_jax.sweep --sweep configs/sweeps/ablation_tiny.py --workdir runs/sweep
  python -m diffst_jax.sweep --sweep configs/sweeps/ablation_tiny.py --workdir runs/sweep --emit-commands
  python -m diffst_jax.sweep --sweep configs/sweeps/ablation_tiny.py --workdir runs/sweep --trial NAME

A sweep file defines `get_sweep()` returning a dict:
  config:   the experiment config file every trial starts from (e.g. "configs/tiny.py");
  base:     {config field: value} applied to every trial (data, initial weights, steps);
  grid:     {config field: [values]}, every combination a trial; or
  trials:   [{config field: value}, ...], an explicit list (grid and trials may be combined: grid x each entry);
  evaluate: the evaluate.py arguments without --out / --checkpoint, as {"gt": FOLDER, "protocol": ..., ...}.
Relative paths in the sweep file are relative to the directory `python -m diffst_jax.sweep` runs in.

Each trial runs in WORKDIR/NAME: train/ (train.py's workdir, with its resolved config.json; an interrupted trial
resumes there), eval/ (evaluate.py's output) and, once both are done, trial.json (its overrides and the DiffST
scores). A trial with trial.json is finished and skipped when the sweep runs again. The sweep ends with
WORKDIR/summary.md (a table: trials x mean scores, each linking its trial's report.html) and WORKDIR/summary.png
(PSNR and LPIPS per trial).
`--emit-commands` prints one self-contained command per unfinished trial, for a cluster scheduler; run the sweep
once more afterwards (or with --summary-only) to write the summary.
"""

import argparse
import hashlib
import itertools
import json
import pathlib
import shlex
import subprocess
import sys
import urllib.parse

from diffst_jax import cli, config_files
from diffst_jax.io import outputs

SUMMARY_METRICS = ("psnr", "ssim", "lpips", "dists", "tof", "tlp")
SUMMARY_FILES = ("summary.md", "summary.png")


class TrialFailed(RuntimeError):
  """A trial's train.py or evaluate.py run that ended with an error (its own output says which)."""


def load_sweep(path: str | pathlib.Path) -> dict:
  sweep = config_files.call_python_file(path, "sweep", "get_sweep")
  if not isinstance(sweep, dict):
    raise ValueError(f"{path}: get_sweep() must return a dict, got {type(sweep).__name__}")
  unknown = set(sweep) - {"config", "base", "grid", "trials", "evaluate"}
  if unknown or "config" not in sweep or "evaluate" not in sweep or "gt" not in sweep["evaluate"]:
    raise ValueError(f"{path}: get_sweep() needs 'config' and 'evaluate' (with 'gt'), may have 'base', 'grid', "
                     f"'trials'; unknown keys: {sorted(unknown)}")
  return sweep


def expand(sweep: dict) -> dict[str, dict]:
  """{trial name: overrides}, base first, then the grid combination, then the explicit trial's own overrides."""
  grid = sweep.get("grid", {})
  combinations = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
  varieds = {json.dumps(combination | extra, sort_keys=True, default=str): combination | extra
             for combination in combinations for extra in sweep.get("trials", [{}])}  # the same overrides: one trial
  names = [trial_name(varied) for varied in varieds.values()]
  trials = {}
  for varied, name in zip(varieds.values(), names):
    if names.count(name) > 1:  # readable names that coincide for different values get their values' hash
      name = f"{name}-{_values_hash(varied)}"
    if name in trials:
      raise ValueError(f"two trials of the sweep would both be named {name}; rename a grid value")
    trials[name] = dict(sweep.get("base", {})) | varied
  return trials


def trial_name(varied: dict) -> str:
  """A readable, filesystem-safe name from the fields that vary (each named by its last two parts):
  "cfca.enabled=False,vrg.enabled=True"; where making it safe changed a value (a path's "/", a space), a short hash of
  the values follows, so that different values never share a name (`expand` adds it where short names coincide)."""
  if not varied:
    return "base"
  short = lambda field: ".".join(field.split(".")[-2:])  # noqa: E731
  name = ",".join(f"{short(field)}={value}" for field, value in varied.items())
  safe = name.replace("/", "_").replace(" ", "")
  return safe if safe == name else f"{safe}-{_values_hash(varied)}"


def _values_hash(varied: dict) -> str:
  return hashlib.sha256(json.dumps(varied, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _train_command(sweep: dict, overrides: dict, trial_dir: pathlib.Path) -> list[str]:
  flags = [f"--config.{field}={value}" for field, value in overrides.items()]
  return [sys.executable, "-m", "diffst_jax.commands.train", "--config", str(sweep["config"]),
          f"--workdir={trial_dir / 'train'}",
          *flags]


def _evaluate_command(sweep: dict, trial_dir: pathlib.Path) -> list[str]:
  arguments = []
  for name, value in sweep["evaluate"].items():
    flag = "--" + name.replace("_", "-")
    if value is True:
      arguments.append(flag)
    elif value is not False and value is not None:
      arguments += [flag, *map(str, value if isinstance(value, (list, tuple)) else [value])]
  return [sys.executable, "-m", "diffst_jax.commands.evaluate", *arguments, "--out", str(trial_dir / "eval"),
          "--checkpoint", str(trial_dir / "train" / "model")]


def _run(command: list[str], what: str) -> None:
  print("+ " + shlex.join(command), flush=True)
  result = subprocess.run(command, check=False)
  if result.returncode:
    raise TrialFailed(f"{what} failed (exit {result.returncode}); fix it and run the sweep again to resume")


def run_trial(sweep: dict, name: str, overrides: dict, workdir: pathlib.Path) -> dict:
  """Trains and scores one trial unless it is finished; returns its trial.json record."""
  trial_dir = workdir / name
  record_path = trial_dir / "trial.json"
  if record_path.is_file():
    print(f"{name}: finished, skipped", flush=True)
    return json.loads(record_path.read_text())
  trial_dir.mkdir(parents=True, exist_ok=True)
  if not (trial_dir / "train" / "model" / "model.json").is_file():  # train.py resumes, or redoes a cut-short export
    _run(_train_command(sweep, overrides, trial_dir), f"{name}: training")
  if not (trial_dir / "eval" / "scores.json").is_file():  # evaluate.py writes eval/ whole or not at all
    _run(_evaluate_command(sweep, trial_dir), f"{name}: evaluation")
  results = json.loads((trial_dir / "eval" / "scores.json").read_text())["results"]
  model = next(method for method in results if method.startswith("DiffST ("))
  record = {"name": name, "overrides": overrides, "scores": results[model]["mean"], "all_methods": results}
  partial = record_path.with_suffix(".partial")
  partial.write_text(json.dumps(record, indent=2) + "\n")
  partial.rename(record_path)  # the marker of a finished trial appears whole or not at all
  return record


def summarize(records: list[dict], workdir: pathlib.Path) -> str:
  """Writes summary.md and summary.png; returns the table."""
  keys = [key for key in SUMMARY_METRICS if all(key in record["scores"] for record in records)]
  lines = ["| trial | " + " | ".join(keys) + " | report |", "|---" + "|---:" * len(keys) + "|---|"]
  for record in records:
    report = pathlib.PurePosixPath(record["name"], "eval", "report.html")  # evaluate.py's, relative to the summary
    link = f"[report]({urllib.parse.quote(str(report))})" if (workdir / report).is_file() else ""
    lines.append(f"| {record['name']} | " + " | ".join(
        f"{record['scores'][key]:.2f}" if key == "psnr" else f"{record['scores'][key]:.4f}" for key in keys)
                 + f" | {link} |")
  table = "\n".join(lines) + "\n"
  (workdir / "summary.md").write_text(f"Mean scores of each trial's DiffST over the evaluation clips.\n\n{table}")

  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  figure, axes = pyplot.subplots(1, 2, figsize=(4 + 1.2 * len(records), 4))
  names = [record["name"] for record in records]
  for axis, key, label in zip(axes, ("psnr", "lpips"), ("PSNR (dB) ↑", "LPIPS ↓")):
    axis.bar(range(len(records)), [record["scores"][key] for record in records])
    axis.set_xticks(range(len(records)), names, rotation=30, ha="right", fontsize=8)
    axis.set_title(label)
  figure.tight_layout()
  figure.savefig(workdir / "summary.png", dpi=100)
  pyplot.close(figure)
  return table


def check_workdir(workdir: str, sweep_file: str, trials: dict) -> pathlib.Path:
  """The sweep's work directory, after refusing one that holds anything but this sweep's trials and summary (or the
  sweep file, or the working directory)."""
  path = outputs.check_destination(workdir, [sweep_file], folder=True)
  if path.is_dir():
    stray = sorted(entry.name for entry in path.iterdir() if entry.name not in (*trials, *SUMMARY_FILES)
                   or (entry.name in trials) != entry.is_dir())
    if stray:
      raise ValueError(f"{workdir}: holds {stray[0]!r}, which is neither a trial of {sweep_file} nor its summary; "
                       "use a new --workdir for the sweep")
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sweep", required=True, help="sweep file (configs/sweeps/*.py)")
  parser.add_argument("--workdir", required=True, help="the sweep's directory: one folder per trial")
  parser.add_argument("--emit-commands", action="store_true", help="print one command per unfinished trial")
  parser.add_argument("--trial", help="run only this trial (what --emit-commands prints)")
  parser.add_argument("--summary-only", action="store_true", help="only aggregate the finished trials")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)

  def work() -> int:
    sweep = load_sweep(args.sweep)
    trials = expand(sweep)
    workdir = check_workdir(args.workdir, args.sweep, trials)
    if args.trial is not None and args.trial not in trials:
      raise ValueError(f"no trial {args.trial!r} in {args.sweep}; its trials: {', '.join(trials)}")
    if args.emit_commands:
      for name in trials:
        if not (workdir / name / "trial.json").is_file():
          print(shlex.join([sys.executable, "-m", "diffst_jax.sweep", "--sweep", str(args.sweep), "--workdir",
                            str(workdir), "--trial", name]))
      return cli.DONE
    selected = [args.trial] if args.trial else list(trials)
    if not args.summary_only:
      try:
        for name in selected:
          run_trial(sweep, name, trials[name], workdir)
      except TrialFailed as error:
        print(f"diffst_jax.sweep: {error}", file=sys.stderr)
        return cli.PART_FAILED
    if args.trial:
      return cli.DONE
    records = [json.loads((workdir / name / "trial.json").read_text()) for name in trials
               if (workdir / name / "trial.json").is_file()]
    if not records:
      raise ValueError(f"{workdir}: no finished trial to summarize")
    print(summarize(records, workdir))
    return cli.DONE

  return cli.run("diffst_jax.sweep", work, args.debug)


if __name__ == "__main__":
  sys.exit(main())
