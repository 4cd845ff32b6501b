"""Scaled dot-product attention: the one entry point every model calls.

Layout is (B, S, heads, head_dim), as `jax.nn.dot_product_attention` takes it (not torch's (B, heads, S, D)).
"""

import jax


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Softmax attention of q (B, Sq, N, D) over k, v (B, Sk, N, D) with scale 1/sqrt(D); returns (B, Sq, N, D)."""
  return jax.nn.dot_product_attention(q, k, v, implementation="xla")
