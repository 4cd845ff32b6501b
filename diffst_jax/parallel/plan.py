"""The one place where the mesh and the backend decide how the models compute.

An `ExecutionPlan` is made once, at the entry point (a script, the AOT tool, a test), from a mesh, its logical axis
rules, the platform the program is compiled for (the mesh's devices', which may be a TPU slice compiled for from
another machine: diffst_jax.aot) and the run's choices, and is passed explicitly: every model, loss and layer takes
it as its first argument and asks it what to do: how to lay out an activation, which attention and convolution
implementations to run, whether to pad tokens, which convolution kernel gradients to take tap by tap; derived plans
lay out the VAE (`for_vae`) and per-image networks (`for_images`). Nothing below the entry points looks at the mesh
or the backend itself. `ExecutionPlan()` is the single-device plan of JAX's default backend, whose layout calls are
no-ops; `activate(mesh, rules, ...)` makes a plan for a mesh and also sets that mesh as JAX's (`jax.set_mesh`).

Jitted functions take the plan as a static argument, so a program traced under one plan is never reused under
another. Each XLA workaround below names the test that shows the defect it avoids.
"""

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding

from diffst_jax.ops import attention as attention_ops
from diffst_jax.parallel import backend
from diffst_jax.parallel import rules as rules_lib

CONV_IMPLEMENTATIONS = ("auto", "xla", "gemm")
CONTEXT_PARALLEL_MODES = ("allgather_kv", "ulysses", "ring")  # parallel/attention.py


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
  mesh: Mesh | None = None
  rules: rules_lib.Rules = rules_lib.DEFAULT_RULES
  platform: str = ""  # default: the mesh's devices', else JAX's default backend
  # The run's choices, not the model's (no checkpoint records them):
  conv_implementation: str = "auto"  # "auto", "xla" or "gemm" (`convolutions`)
  attention: str = "auto"  # ops/attention.py's implementations (`attention_implementation`)
  attention_block_size: int = 512  # key block of "blockwise" attention
  context_parallel: str = "allgather_kv"  # how self-attention spreads over "act_length" (parallel/attention.py)
  # Our loops (the DiT's blocks, the VAE's time chunks, the perceptual loss's frame groups) as straight-line code:
  # the same numbers in a longer program, for estimates that count a loop's body once (aot.py, libtpu).
  unroll_loops: bool = False

  def __post_init__(self):
    rules_lib.check_rules(self.rules)
    for name, value, known in (("conv_implementation", self.conv_implementation, CONV_IMPLEMENTATIONS),
                               ("attention", self.attention, attention_ops.IMPLEMENTATIONS),
                               ("context_parallel", self.context_parallel, CONTEXT_PARALLEL_MODES)):
      if value not in known:
        raise ValueError(f"{name} = {value!r} is unknown: use one of {', '.join(known)}")
    if self.attention_block_size < 1:
      raise ValueError(f"attention_block_size = {self.attention_block_size}: a positive number of keys")
    if not self.platform:
      platform = self.mesh.devices.flat[0].platform if self.mesh is not None else jax.default_backend()
      object.__setattr__(self, "platform", platform)

  # Layout --------------------------------------------------------------------------------------------------------

  def axis_size(self, logical_name: str) -> int:
    """How many devices the mesh spreads `logical_name` over (1 without a mesh)."""
    return 1 if self.mesh is None else rules_lib.axis_size_on(self.mesh, self.rules, logical_name)

  def spec(self, names: Sequence[str | None], shape: Sequence[int]) -> jax.sharding.PartitionSpec:
    return rules_lib.logical_to_mesh(names, self.rules, shape, self.mesh)

  def constrain(self, x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`x` constrained to the sharding its logical axis `names` map to (a no-op without a mesh)."""
    if self.mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, self.spec(names, x.shape)))

  # Algorithms ----------------------------------------------------------------------------------------------------

  def scan(self, body, carry, xs):
    """`jax.lax.scan(body, carry, xs)`; with `unroll_loops`, the same steps as straight-line code, which stays free of
    loops when differentiated (the gradient of a scan with `unroll` is a rolled loop again)."""
    if not self.unroll_loops:
      return jax.lax.scan(body, carry, xs)
    ys = []
    for step in range(jax.tree.leaves(xs)[0].shape[0]):
      carry, y = body(carry, jax.tree.map(lambda x, step=step: x[step], xs))
      ys.append(y)
    return carry, jax.tree.map(lambda *steps: jnp.stack(steps), *ys)

  def attention_implementation(self) -> str:
    """What this plan's `attention` ("auto", "xla", "splash", ...) runs as on its platform: "auto" is cuDNN on GPU,
    splash on TPU, XLA elsewhere."""
    return attention_ops.resolve_implementation(self.attention, self.platform)

  def convolutions(self, requested: str | None = None) -> str:
    """What a convolution runs as (`layers.convolve`): `requested`, else this plan's `conv_implementation`, with
    "auto" resolved from the platform: "gemm" on CPU, whose XLA backend runs 3D convolutions and kernel gradients
    slowly (training steps 2.3x faster, the Wan2.1 VAE's encode and decode 1.5x, compiles 2-5x longer:
    bench/conv.py, bench/vae.py), XLA's native convolutions on GPU and TPU."""
    choice = requested or self.conv_implementation
    if choice == "auto":
      return "gemm" if self.platform == "cpu" else "xla"
    return choice

  def memory_budget(self) -> int:
    """Bytes one program may plan to use on each device of this plan (`backend.memory_budget` of its first)."""
    device = self.mesh.devices.flat[0] if self.mesh is not None else jax.local_devices(backend=self.platform)[0]
    return backend.memory_budget(device)

  def token_padding(self, length: int) -> int:
    """Tokens to append so `length` splits over the devices of "act_length" (the padding is masked)."""
    return -length % self.axis_size("act_length")

  def kernel_gradient_by_taps(self, input_shape: Sequence[int]) -> bool:
    """Whether a convolution over an input of `input_shape` ((N, ..., H, W, C), rows H laid out over "act_rows")
    must take its kernel gradient tap by tap (`layers.convolve`).

    XLA's SPMD partitioner (jax 0.10.2, Shardy and GSPMD alike) multiplies the kernel gradient of a convolution
    whose input is split along a spatial axis by the number of devices that input is replicated over
    (tests/models/test_layers.py shows it). Only when the rows are split and some device axis of the mesh would
    hold copies of the input (tensor, or batch axes the leading dimension does not fill) is the workaround needed;
    otherwise the input and output cotangent are laid out with every device axis used (`conv_layout`) and XLA's
    native kernel gradient is exact.
    """
    if self.mesh is None:
      return False
    rows_devices = self.axis_size("act_rows")
    if rows_devices == 1 or input_shape[-3] % rows_devices:
      return False  # rows whole on every device: nothing to get wrong
    batch_devices = self.axis_size("act_batch") if input_shape[0] % self.axis_size("act_batch") == 0 else 1
    return batch_devices * rows_devices < self.mesh.size

  def for_vae(self, coarsest_rows: int) -> "ExecutionPlan":
    """The plan for the VAE, whose coarsest level has `coarsest_rows`: rows over "act_rows" only if they divide
    there, else whole at every level. Splitting only the levels that divide gave wrong results: XLA's partitioning of
    a 32-row clip over context = 8 (levels of 32, 16 and 8 rows split, 4 whole) encodes 7% off
    (tests/parallel/test_models_sharded.py), while other such clips come out exact."""
    if coarsest_rows % self.axis_size("act_rows") == 0:
      return self
    return self._remapped({"act_rows": None})

  def for_images(self) -> "ExecutionPlan":
    """The plan for a per-image network (the perceptual loss) over a batch of frames: the batch ("act_batch") spread
    over every batch and context axis, one image's rows whole on its device. Splitting the rows of a decoded clip
    over context instead makes XLA's partitioner get that loss's gradient wrong (3.9x on fsdp=2, context=2,
    tensor=2; tests/parallel/test_train_step_sharded.py), and whole clips per batch group would run the network on
    every frame on every device of the group."""
    table, clip_axes = dict(self.rules), ("act_frames", "act_length", "act_rows")
    spread = dict.fromkeys(axis for name in ("act_batch", *clip_axes) for axis in rules_lib.mesh_axes(table.get(name)))
    return self._remapped({"act_batch": tuple(spread), **dict.fromkeys(clip_axes)})

  def _remapped(self, changes: dict) -> "ExecutionPlan":
    """This plan with the logical axes in `changes` mapped to its mesh axes instead."""
    return dataclasses.replace(self, rules=tuple((name, changes.get(name, axes)) for name, axes in self.rules))

  @staticmethod
  def conv_layout(ndim: int) -> tuple[str | None, ...]:
    """Logical axes of a convolution input or output (N, ..., H, W, C): leading axis over the batch axes, rows
    over "act_rows"."""
    return ("act_batch",) + (None,) * (ndim - 4) + ("act_rows", None, None)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: rules_lib.Rules = rules_lib.DEFAULT_RULES, **choices) -> Iterator[ExecutionPlan]:
  """The plan of `mesh` with `rules` and the run's `choices` (`conv_implementation`, `attention`,
  `attention_block_size`, `context_parallel`), with `mesh` set as JAX's for the code run inside."""
  plan = ExecutionPlan(mesh, rules, **choices)
  with jax.set_mesh(mesh):
    yield plan
