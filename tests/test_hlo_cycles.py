"""hlo_cycles: libtpu's per-operation cycle estimates read from compiled HLO text and summed by part and operation
(the lines below are in the form libtpu prints them; aot's tests read a real compiled program)."""

import pytest

from diffst_jax import hlo_cycles

PARTS = ("_encode", "_decode", "dit", "dot_product_attention")


def _line(name: str, op_name: str | None, cycles: int | None, frame: int = 7) -> str:
  metadata = f', metadata={{op_name="{op_name}" stack_frame_id={frame}}}' if op_name is not None else ""
  config = f', backend_config={{"window_config":{{"estimated_cycles":"{cycles}","is_mask":false}}}}' if cycles else ""
  return f"  %{name} = bf16[4,8]{{1,0:T(8,128)(2,1)}} fusion(%p0), kind=kLoop, calls=%fused.1{metadata}{config}"


@pytest.mark.parametrize("op_name, label", [
    ("jit(forward)/jit(_decode)/conv_general_dilated", "_decode/conv_general_dilated"),
    ("jit(step)/transpose(jvp(jit(_encode)))/conv_general_dilated", "_encode backward/conv_general_dilated"),
    ("jit(step)/jvp(dit)/dot_product_attention/shard_map/dot_general", "dot_product_attention/dot_general"),
    ("jit(forward)/dit/bshd,hd->bsh/dot_general", "dit/dot_general"),
    ("jit(forward)/add;jit(forward)/broadcast_in_dim", "other/add"),
    ("jit(forward)/vmap(jit(take_along_axis))/gather", "other/gather"),
    ("reverse.14", "other/reverse.14"),
])
def test_an_operation_is_labelled_by_its_innermost_part_and_its_operation(op_name, label):
  assert hlo_cycles.label(op_name, PARTS) == label


def test_cycles_are_summed_by_label_and_ranked_with_the_rest_together():
  text = "\n".join([
      "ENTRY %main (p0: bf16[4,8]) -> bf16[4,8] {",
      _line("fusion.1", "jit(f)/jit(_decode)/conv_general_dilated", 500),
      _line("fusion.2", "jit(f)/jit(_decode)/conv_general_dilated", 100),
      _line("fusion.3", "jit(f)/dit/dot_general", 250),
      _line("fusion.4", "jit(f)/jit(_encode)/mul", 100),
      _line("fusion.5", None, 50),
      _line("copy-start.1", "jit(f)/dit/copy", None),  # no estimate: not counted
      _line("scatter_offload_custom_fusion.1", "jit(f)/transpose(jvp(cfca))/scatter-add", 2**63 - 1),  # unpriced
      "}"])
  assert list(hlo_cycles.operation_cycles(text)) == [
      ("jit(f)/jit(_decode)/conv_general_dilated", 500), ("jit(f)/jit(_decode)/conv_general_dilated", 100),
      ("jit(f)/dit/dot_general", 250), ("jit(f)/jit(_encode)/mul", 100), ("", 50)]
  assert hlo_cycles.shares(text, PARTS, top=2) == pytest.approx(
      {"_decode/conv_general_dilated": 0.6, "dit/dot_general": 0.25, "rest": 0.15})
  assert hlo_cycles.shares("ENTRY %main () -> f32[] {\n}", PARTS) == {}


# The stack tables as libtpu 0.0.42 prints them at the head of a compiled program: frame 3 (in jax, called from
# frame 2) -> frame 2 (vae.py, called from frame 1) -> frame 1 (aot.py); each parent printed as its number plus one.
STACK_TABLES = """HloModule jit_forward, is_scheduled=true

FileNames
1 "/venv/lib/python3.11/site-packages/jax/_src/numpy/lax_numpy.py"
2 "/home/me/diffst_jax/models/vae.py"
3 "/home/me/diffst_jax/aot.py"

FunctionNames
1 "concatenate"
2 "causal_conv"
3 "main"

FileLocations
1 {file_name_id=3 function_name_id=3 line=420 end_line=420 column=9 end_column=52}
2 {file_name_id=2 function_name_id=2 line=152 end_line=152 column=6 end_column=57}
3 {file_name_id=1 function_name_id=1 line=4581 end_line=4581 column=2 end_column=30}

StackFrames
1 {file_location_id=1 parent_frame_id=1}
2 {file_location_id=2 parent_frame_id=2}
3 {file_location_id=3 parent_frame_id=3}
"""


def test_cycles_are_summed_by_the_innermost_line_of_the_package_that_traced_them():
  text = STACK_TABLES + "\n".join([
      "ENTRY %main (p0: bf16[4,8]) -> bf16[4,8] {",
      _line("pad.1", "jit(f)/jit(_decode)/concatenate", 300, frame=3),  # traced in jax, called from vae.py
      _line("fusion.1", "jit(f)/jit(_decode)/mul", 50, frame=2),
      _line("fusion.2", "jit(f)/transpose(jvp(jit(_decode)))/concatenate", 400, frame=3),
      _line("fusion.3", "jit(f)/add", 200, frame=1),
      _line("fusion.4", "jit(f)/sub", 50, frame=99),  # a frame the tables do not hold
      "}"])
  assert hlo_cycles.source_line_shares(text, PARTS, "diffst_jax") == pytest.approx({
      "_decode backward: models/vae.py:152 causal_conv": 0.4, "_decode: models/vae.py:152 causal_conv": 0.35,
      "other: aot.py:420 main": 0.2, "other: elsewhere": 0.05})
  assert hlo_cycles.source_line_shares(text, PARTS, "diffst_jax", top=1) == pytest.approx(
      {"_decode backward: models/vae.py:152 causal_conv": 0.4, "rest": 0.6})
  assert hlo_cycles.source_line_shares(text, PARTS, "another_package") == pytest.approx(
      {"_decode backward: elsewhere": 0.4, "_decode: elsewhere": 0.35, "other: elsewhere": 0.25})
