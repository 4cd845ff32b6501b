"""Scaled dot-product attention: the one entry point every model calls, with one implementation per backend.

Layout is (B, S, heads, head_dim), as `jax.nn.dot_product_attention` takes it (not torch's (B, heads, S, D)).

Implementations (the execution plan's `attention`, parallel/plan.py, which resolves "auto" for the platform the
program is compiled for and runs the kernels inside shard_map, parallel/attention.py):
  "auto"       cuDNN on GPU, splash on TPU, XLA elsewhere;
  "xla"        the reference: full logits, softmax in float32 or wider;
  "blockwise"  FlashAttention in XLA: online softmax over key blocks in a `lax.scan`, a custom backward that
               recomputes each block from the saved log-sum-exp; memory linear in the sequence length, forward
               and backward (the XLA fallback for long sequences);
  "cudnn"      `jax.nn.dot_product_attention(implementation="cudnn")` (GPU; cuDNN takes float16/bfloat16, so
               float32 inputs run the XLA path);
  "splash"     Pallas splash attention (TPU; a Mosaic kernel: under a mesh it runs inside shard_map);
  "splash_interpret"  the same kernel in Pallas' interpreter, on any backend: the TPU path's numbers, checked on CPU.
A key mask (B, Sk), True for real keys, hides padding; cuDNN and splash take it as a count of leading real keys,
so their padding must sit at the end (as context-parallel padding does).
"""

import functools
import math

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "blockwise", "cudnn", "splash", "splash_interpret")
KERNELS = ("cudnn", "splash", "splash_interpret")  # custom calls XLA cannot partition: run on per-device operands
_BACKEND_OF = {"cudnn": "gpu", "splash": "tpu"}
SCOPE = "dot_product_attention"  # every attention is traced under this name (ops/flops.py counts its FLOPs by it)
_MASKED = -1e30  # finite, so fully masked blocks never produce inf - inf


def resolve_implementation(name: str, backend: str) -> str:
  """The implementation `name` stands for on `backend` (the platform compiled for); an accelerator kernel elsewhere is
  an error."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {name!r} is unknown; choose one of {IMPLEMENTATIONS}")
  if name == "auto":
    return {"gpu": "cudnn", "tpu": "splash"}.get(backend, "xla")
  if name in _BACKEND_OF and backend != _BACKEND_OF[name]:
    raise ValueError(f"attention implementation {name!r} needs a {_BACKEND_OF[name]} backend, this one is "
                     f"{backend}; use 'auto', 'xla' or 'blockwise'")
  return name


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, key_mask: jax.Array | None = None,
                          implementation: str = "xla", block_size: int = 512) -> jax.Array:
  """Softmax attention of q (B, Sq, N, D) over k, v (B, Sk, N, D) with scale 1/sqrt(D); returns (B, Sq, N, D).
  `implementation`: a resolved one (not "auto": `resolve_implementation`)."""
  if implementation not in IMPLEMENTATIONS[1:]:
    raise ValueError(f"attention implementation {implementation!r}: expected one of {IMPLEMENTATIONS[1:]}, resolved "
                     "for the platform (resolve_implementation)")
  with jax.named_scope(SCOPE):
    return _attention(q, k, v, key_mask, implementation, block_size)


def _attention(q, k, v, key_mask, implementation, block_size):
  if implementation == "cudnn" and q.dtype in (jnp.bfloat16, jnp.float16):
    lengths = None if key_mask is None else jnp.sum(key_mask, axis=-1, dtype=jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
  if implementation in ("splash", "splash_interpret"):
    return _splash(q, k, v, key_mask, interpret=implementation == "splash_interpret")
  if implementation == "blockwise":
    return _blockwise(q, k, v, key_mask, block_size)
  return _xla(q, k, v, key_mask)


def _xla(q, k, v, key_mask):
  # jax.nn's XLA path rounds logits to float32 even for float64 inputs; this one keeps float64 checks exact.
  return attention_with_lse(q, k, v, key_mask)[0].astype(v.dtype)


def attention_with_lse(q: jax.Array, k: jax.Array, v: jax.Array,
                       key_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """XLA attention that also returns each query's log-sum-exp of logits (B, N, Sq), for merging partial results
  over key blocks (ring attention); the output is in float32 or wider."""
  dtype = jnp.promote_types(q.dtype, jnp.float32)
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=dtype) / math.sqrt(q.shape[-1])
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, _MASKED)
  lse = jax.nn.logsumexp(logits, axis=-1)
  weights = jnp.exp(logits - lse[..., None])
  return jnp.einsum("bnqk,bknd->bqnd", weights, v.astype(dtype)), lse


def _blockwise(q, k, v, key_mask, block_size):
  b, sk = k.shape[:2]
  block = min(block_size, sk)
  pad = -sk % block
  mask = jnp.ones((b, sk), bool) if key_mask is None else key_mask
  if pad:
    k, v = (jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))) for a in (k, v))
    mask = jnp.pad(mask, ((0, 0), (0, pad)))
  return _flash(q, k, v, mask, block)


def _key_blocks(a: jax.Array, block: int) -> jax.Array:
  """(B, Sk, ...) -> (Sk / block, B, block, ...): the scanned axis first."""
  return jnp.moveaxis(a.reshape(a.shape[0], -1, block, *a.shape[2:]), 1, 0)


def _block_logits(q, k_blk, m_blk, dtype):
  """Scaled logits (B, N, Sq, block) of q against one key block, masked keys at _MASKED."""
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k_blk, preferred_element_type=dtype) / math.sqrt(q.shape[-1])
  return jnp.where(m_blk[:, None, None, :], logits, _MASKED)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, mask, block):
  return _flash_forward(q, k, v, mask, block)[0]


def _flash_forward(q, k, v, mask, block):
  """Online softmax over key blocks (FlashAttention's forward): the output and each query's log-sum-exp, with one
  block of logits alive at a time."""
  b, sq, n, d = q.shape
  dtype = jnp.promote_types(q.dtype, jnp.float32)

  def step(carry, kv):
    running_max, total, acc = carry
    k_blk, v_blk, m_blk = kv
    logits = _block_logits(q, k_blk, m_blk, dtype)
    new_max = jnp.maximum(running_max, logits.max(axis=-1))
    probs = jnp.exp(logits - new_max[..., None])
    correction = jnp.exp(running_max - new_max)
    total = total * correction + probs.sum(axis=-1)
    acc = acc * jnp.moveaxis(correction, 1, 2)[..., None] + jnp.einsum(
        "bnqk,bknd->bqnd", probs, v_blk, preferred_element_type=dtype)
    return (new_max, total, acc), None

  init = (jnp.full((b, n, sq), _MASKED, dtype), jnp.zeros((b, n, sq), dtype), jnp.zeros((b, sq, n, d), dtype))
  (running_max, total, acc), _ = jax.lax.scan(step, init, tuple(_key_blocks(a, block) for a in (k, v, mask)))
  out = (acc / jnp.moveaxis(total, 1, 2)[..., None]).astype(v.dtype)
  return out, running_max + jnp.log(total)


def _flash_fwd(q, k, v, mask, block):
  out, lse = _flash_forward(q, k, v, mask, block)
  return out, (q, k, v, mask, out, lse)


def _flash_bwd(block, residuals, d_out):
  """FlashAttention's backward: each key block's probabilities recomputed from the saved log-sum-exp, so memory
  stays linear in the sequence length (XLA's autodiff of the forward would keep every block's)."""
  q, k, v, mask, out, lse = residuals
  dtype = lse.dtype
  scale = 1 / math.sqrt(q.shape[-1])
  d_out = d_out.astype(dtype)
  row_dot = jnp.einsum("bqnd,bqnd->bnq", d_out, out.astype(dtype))  # sum_k p dp, per query

  def step(dq, kv):
    k_blk, v_blk, m_blk = kv
    probs = jnp.exp(_block_logits(q, k_blk, m_blk, dtype) - lse[..., None])
    dv_blk = jnp.einsum("bnqk,bqnd->bknd", probs, d_out)
    dp = jnp.einsum("bqnd,bknd->bnqk", d_out, v_blk, preferred_element_type=dtype)
    ds = probs * (dp - row_dot[..., None]) * scale
    dq = dq + jnp.einsum("bnqk,bknd->bqnd", ds, k_blk, preferred_element_type=dtype)
    dk_blk = jnp.einsum("bnqk,bqnd->bknd", ds, q, preferred_element_type=dtype)
    return dq, (dk_blk.astype(k.dtype), dv_blk.astype(v.dtype))

  dq, (dk, dv) = jax.lax.scan(step, jnp.zeros(q.shape, dtype), tuple(_key_blocks(a, block) for a in (k, v, mask)))
  unblock = lambda a: jnp.moveaxis(a, 0, 1).reshape(k.shape)  # noqa: E731
  return dq.astype(q.dtype), unblock(dk), unblock(dv), None


_flash.defvjp(_flash_fwd, _flash_bwd)


_SPLASH_MULTIPLE = 128  # splash's blocks are multiples of the TPU's 128 lanes


def _splash_block(length: int) -> int:
  return next(size for size in (512, 256, _SPLASH_MULTIPLE) if length % size == 0)


def _splash_kernel(heads: int, q_len: int, kv_len: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=import-outside-toplevel
      splash_attention_kernel, splash_attention_mask)

  block_q, block_kv = _splash_block(q_len), _splash_block(kv_len)
  blocks = splash_attention_kernel.BlockSizes(
      block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv, block_q_dkv=block_q, block_kv_dkv=block_kv,
      block_kv_dkv_compute=block_kv, use_fused_bwd_kernel=True)
  mask = splash_attention_mask.MultiHeadMask([splash_attention_mask.FullMask((q_len, kv_len))] * heads)
  # Made anew in each trace: the kernel holds its block tables as arrays, which a cache would leak into other traces.
  return splash_attention_kernel.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                                                 interpret=interpret)


def _splash(q, k, v, key_mask, interpret=False):
  """Splash on (B, S, N, D): the sequences padded to multiples of 128 (padded keys masked, padded queries dropped)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=import-outside-toplevel
      splash_attention_kernel)

  b, sq, n, d = q.shape
  sk = k.shape[1]
  pad_q, pad_k = -sq % _SPLASH_MULTIPLE, -sk % _SPLASH_MULTIPLE
  if pad_k and key_mask is None:
    key_mask = jnp.ones((b, sk), bool)
  pad = lambda a, extra: jnp.pad(a, ((0, 0), (0, extra)) + ((0, 0),) * (a.ndim - 2)) if extra else a  # noqa: E731
  q, k, v = pad(q / math.sqrt(d), pad_q), pad(k, pad_k), pad(v, pad_k)
  kernel = _splash_kernel(n, sq + pad_q, sk + pad_k, interpret)
  q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))  # splash takes (N, S, D) per example
  if key_mask is None:
    out = jax.vmap(kernel)(q, k, v)
  else:
    segments = splash_attention_kernel.SegmentIds(q=jnp.ones((b, sq + pad_q), jnp.int32),
                                                   kv=pad(key_mask, pad_k).astype(jnp.int32))
    out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(q, k, v, segments)
  return jnp.swapaxes(out, 1, 2)[:, :sq]
