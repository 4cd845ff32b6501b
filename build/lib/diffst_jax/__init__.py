"""diffst-jax: DiffST one-step space-time video super-resolution in JAX / Flax NNX."""

from diffst_jax.parallel import backend as _backend

_backend.quiet_libtpu_without_chips()  # before any JAX backend starts
