"""Where a compiled TPU program's time goes, by the compiler's own reckoning. libtpu writes an `estimated_cycles`
into the backend config of each operation it schedules (fusions, copies, slices, pads, ...; not the collectives nor
the asynchronous copies between memories), and the op_name metadata of each names the JAX operation it came from and
the jit-compiled functions and named scopes it was traced under. Summed by part and operation, those cycles name the
operations that dominate the compiler's time estimate (`aot.cost`)."""

import re
from collections.abc import Iterator, Sequence

_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_WRAPPERS = re.compile(r"^(?:[\w-]+\()+|\)+$")  # transpose(jvp(jit(_decode))) -> _decode
BACKWARD = " backward"  # appended to the part of a gradient's operations
UNPRICED = 2**63 - 1  # the cycles libtpu writes for an operation it does not price (v5p's SparseCore scatter offloads)


def operation_cycles(hlo_text: str) -> Iterator[tuple[str, int]]:
  """(op_name, estimated cycles) of each operation of a compiled program's HLO text that carries an estimate (not
  UNPRICED)."""
  for line in hlo_text.splitlines():
    cycles = _CYCLES.search(line)
    if cycles and int(cycles.group(1)) < UNPRICED:
      name = _OP_NAME.search(line)
      yield (name.group(1) if name else ""), int(cycles.group(1))


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
  whole = sum(totals.values())
  if not whole:
    return {}
  ranked = sorted(totals.items(), key=lambda item: -item[1])
  result = {key: cycles / whole for key, cycles in ranked[:top]}
  if len(ranked) > top:
    result["rest"] = sum(cycles for _, cycles in ranked[top:]) / whole
  return result
