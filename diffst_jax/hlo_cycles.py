"""Where a compiled TPU program's time goes, by the compiler's own reckoning. libtpu writes an `estimated_cycles`
into the backend config of each operation it schedules (fusions, copies, slices, pads, ...; not the collectives nor
the asynchronous copies between memories), and the op_name metadata of each names the JAX operation it came from and
the jit-compiled functions and named scopes it was traced under, and its stack_frame_id the Python line it was traced
at. Summed by part and operation, or by source line, those cycles name the operations that dominate the compiler's
time estimate (`aot.cost`)."""

import re
from collections.abc import Iterator, Sequence

_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_STACK_FRAME = re.compile(r"stack_frame_id=(\d+)")
_LOCATION = re.compile(r"file_name_id=(\d+) function_name_id=(\d+) line=(\d+)")
_FRAME = re.compile(r"file_location_id=(\d+) parent_frame_id=(\d+)")
_COMPUTATION = re.compile(r"^(?:%|ENTRY )", re.MULTILINE)
_STACK_TABLES = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")
_WRAPPERS = re.compile(r"^(?:[\w-]+\()+|\)+$")  # transpose(jvp(jit(_decode))) -> _decode
BACKWARD = " backward"  # appended to the part of a gradient's operations
UNPRICED = 2**63 - 1  # the cycles libtpu writes for an operation it does not price (v5p's SparseCore scatter offloads)


def operation_cycles(hlo_text: str) -> Iterator[tuple[str, int]]:
  """(op_name, estimated cycles) of each operation of a compiled program's HLO text that carries an estimate (not
  UNPRICED)."""
  for op_name, _, cycles in _estimated_operations(hlo_text):
    yield op_name, cycles


def _estimated_operations(hlo_text: str) -> Iterator[tuple[str, int | None, int]]:
  for line in hlo_text.splitlines():
    cycles = _CYCLES.search(line)
    if cycles and int(cycles.group(1)) < UNPRICED:
      name, frame = _OP_NAME.search(line), _STACK_FRAME.search(line)
      yield (name.group(1) if name else ""), (int(frame.group(1)) if frame else None), int(cycles.group(1))


def label(op_name: str, parts: Sequence[str]) -> str:
  """"part/operation": the innermost of `parts` that `op_name`'s path passes through ("other" if none; BACKWARD
  appended for a gradient's operation), and the JAX operation its path ends in."""
  first = op_name.split(";")[0]  # an operation fused from several names them all, separated by ';'
  path = first.split("/")
  operation = _WRAPPERS.sub("", path[-1]) or "unnamed"
  part = "other"
  for component in path[:-1]:
    name = _WRAPPERS.sub("", component)
    if name in parts:
      part = name
  if "transpose(" in first:
    part += BACKWARD
  return f"{part}/{operation}"


def shares(hlo_text: str, parts: Sequence[str], top: int = 12) -> dict[str, float]:
  """The share of the program's estimated cycles of each "part/operation" (`label`), largest first: the `top`
  largest, and the rest together as "rest". Empty for a program without estimates (not compiled by libtpu)."""
  totals: dict[str, int] = {}
  for op_name, cycles in operation_cycles(hlo_text):
    key = label(op_name, parts)
    totals[key] = totals.get(key, 0) + cycles
  return _ranked(totals, top)


def source_line_shares(hlo_text: str, parts: Sequence[str], package: str, top: int = 12) -> dict[str, float]:
  """As `shares`, by part and source line: "part: path:line function", the part as in `label` and the innermost
  frame of the operation's stack (the program's FileNames, FileLocations and StackFrames tables) in a file under a
  folder named `package`, its path relative to that folder ("elsewhere" for an operation traced outside it)."""
  lines = _SourceLines(hlo_text, package)
  totals: dict[str, int] = {}
  for op_name, frame, cycles in _estimated_operations(hlo_text):
    key = f"{label(op_name, parts).rsplit('/', 1)[0]}: {lines.innermost(frame)}"
    totals[key] = totals.get(key, 0) + cycles
  return _ranked(totals, top)


class _SourceLines:
  """The stack tables at the head of a compiled program's text. libtpu 0.0.42 prints each frame's parent as the
  parent's number plus one (0 + 1 for a frame without one)."""

  def __init__(self, hlo_text: str, package: str):
    self.folder = f"/{package}/"
    self.tables: dict[str, dict[int, str]] = {}
    current = None
    computations = _COMPUTATION.search(hlo_text)  # the tables come before the computations: read only the head
    for line in hlo_text[:computations.start() if computations else len(hlo_text)].splitlines():
      number, _, rest = line.partition(" ")
      if line in _STACK_TABLES:
        current = self.tables.setdefault(line, {})
      elif current is not None and number.isdigit():
        current[int(number)] = rest

  def innermost(self, frame: int | None) -> str:
    frames, locations = self.tables.get("StackFrames", {}), self.tables.get("FileLocations", {})
    for _ in range(len(frames)):
      if frame not in frames:
        break
      location_id, parent = map(int, _FRAME.search(frames[frame]).groups())
      file_id, function_id, line = map(int, _LOCATION.search(locations[location_id]).groups())
      path = self.tables["FileNames"][file_id].strip('"')
      if self.folder in path:
        function = self.tables["FunctionNames"][function_id].strip('"')
        return f"{path.rsplit(self.folder, 1)[1]}:{line} {function}"
      frame = parent - 1
    return "elsewhere"


def _ranked(totals: dict[str, int], top: int) -> dict[str, float]:
  whole = sum(totals.values())
  if not whole:
    return {}
  ranked = sorted(totals.items(), key=lambda item: -item[1])
  result = {key: cycles / whole for key, cycles in ranked[:top]}
  if len(ranked) > top:
    result["rest"] = sum(cycles for _, cycles in ranked[top:]) / whole
  return result
