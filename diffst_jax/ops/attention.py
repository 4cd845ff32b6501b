"""Scaled dot-product attention: the one entry point every model calls.

Layout is (B, S, heads, head_dim), as `jax.nn.dot_product_attention` takes it (not torch's (B, heads, S, D)).
"""

import math

import jax
import jax.numpy as jnp


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Softmax attention of q (B, Sq, N, D) over k, v (B, Sk, N, D) with scale 1/sqrt(D); returns (B, Sq, N, D).

  The XLA reference path: logits and softmax in float32, or float64 for float64 inputs (jax.nn's version always
  rounds to float32, which would hide float64 gradient checks).
  """
  dtype = jnp.promote_types(q.dtype, jnp.float32)
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=dtype) / math.sqrt(q.shape[-1])
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bnqk,bknd->bqnd", weights.astype(v.dtype), v)
