"""One train step's loss and gradients under a mesh (clips over data, tokens and rows over context) equal the
single-device values (fp32, 1e-5)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffst_jax.models import diffst
from diffst_jax.parallel import rules
from diffst_jax.train import perceptual
from diffst_jax.train import step as train_step
from tests.parallel.test_dit_context_parallel import make_mesh, relative_error

WEIGHTS = dict(latent=1.0, rec=1.0, perceptual=0.5, consistency=1.0)
BATCH = ("act_batch", None, None, None, None)
# Known defect (issue 6, open): on (fsdp, context, tensor) = (2, 2, 2), and already on context=2,tensor=2, the loss
# matches but the gradient reaching CFCA through the frozen VAE comes out doubled; DiT, VAE and CFCA forward passes
# and the DiT's own gradients match there. (2,1,4,1) passes too; CI runs the one with the most to get wrong: 8-way
# context parallelism with padded tokens and VAE rows that fall back to whole rows.
MESHES = {"cp2_tp2": "data=1,fsdp=2,context=2,tensor=2"}


@pytest.fixture(scope="module")
def setup(tiny_config):
  model = diffst.init(diffst.DiffSTConfig.from_dict(tiny_config.to_dict()), seed=3)
  graphdef, trainable, frozen = nnx.split(model, train_step.trainable_filter("diffst"), ...)
  loss_fn = train_step.make_loss_fn("diffst", graphdef, WEIGHTS, "lpips_alex")
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  hr = np.random.default_rng(0).integers(0, 256, (2, 9, 32, 32, 3), dtype=np.uint8)
  batch = {"hr": hr, "lr": hr[:, ::2, ::4, ::4]}
  args = (trainable, frozen, perceptual.load("lpips_alex"), batch)
  return grad_fn, args, grad_fn(*args)


@pytest.mark.parametrize("mesh_name", MESHES)
def test_loss_and_gradients_match_single_device(setup, mesh_name):
  grad_fn, (trainable, frozen, lpips, batch), ((loss, terms), grads) = setup
  mesh = make_mesh(MESHES[mesh_name])
  with rules.activate(mesh):
    trainable = jax.device_put(trainable, rules.state_shardings(trainable, mesh))
    frozen = jax.device_put(frozen, rules.state_shardings(frozen, mesh))
    batch = {name: rules.place(jnp.asarray(clip), BATCH, mesh) for name, clip in batch.items()}
    (sharded_loss, sharded_terms), sharded_grads = grad_fn(trainable, frozen, lpips, batch)
  errors = {name: relative_error(sharded_terms[name], terms[name]) for name in terms}
  assert max(errors.values()) <= 1e-5, errors
  assert relative_error(sharded_loss, loss) <= 1e-5
  errors = {jax.tree_util.keystr(path): relative_error(ours, reference) for (path, ours), reference
            in zip(jax.tree_util.tree_leaves_with_path(sharded_grads), jax.tree.leaves(grads))}
  assert max(errors.values()) <= 1e-5, {path: error for path, error in errors.items() if error > 1e-5}
