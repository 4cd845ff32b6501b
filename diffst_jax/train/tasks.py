"""What a training task is (`config.task`): the model it builds from the config and `init`, which of its variables
train, its loss terms, what it previews and what it exports. The loop and the step ask the task; nothing else
branches on its name.

* "diffst": trainable DiT + CFCA + VRG (CFCA's flow network too, unless pretrained and frozen); the VAE frozen (no
  optimizer state) with gradients flowing through it. L_latent = MSE(ẑ, E(I_h)) and, when a stage weights them,
  L_rec / L_perc / L_consis on D(ẑ) against I_h.
* "autoencoder": the VAE alone (stage 0 for a VAE without pretrained weights), pixel losses on D(E(I_h)).
"""

import abc
import dataclasses
import pathlib
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from diffst_jax.convert import dit as dit_convert
from diffst_jax.convert import null_context, spynet, torch_io
from diffst_jax.convert import vae as vae_convert
from diffst_jax.models import diffst
from diffst_jax.models.abstract import abstract
from diffst_jax.models import dit as dit_lib
from diffst_jax.models import vae as vae_lib
from diffst_jax.models.vae import WanVAE
from diffst_jax.parallel import plan as plan_lib
from diffst_jax.train import losses

LOSS_TERMS = ("latent", "rec", "perceptual", "consistency")
PIXEL_TERMS = ("rec", "perceptual", "consistency")


class Task(abc.ABC):
  """One training task; see the module docstring."""

  name: ClassVar[str]
  uses_lr: ClassVar[bool]  # whether its batches carry the degraded LR clip beside the HR one
  loss_terms: ClassVar[tuple[str, ...]]  # the terms it can compute

  def check_loss_weights(self, weights: Mapping[str, float]) -> None:
    unknown = set(weights) - set(LOSS_TERMS)
    if unknown:
      raise ValueError(f"unknown loss terms {sorted(unknown)}; the terms are {LOSS_TERMS}")
    if not any(weights.values()):
      raise ValueError("a stage has all loss weights 0; give at least one of " + ", ".join(LOSS_TERMS) + " a weight")
    impossible = [term for term, weight in weights.items() if weight and term not in self.loss_terms]
    if impossible:
      raise ValueError(f"the {self.name} task has no {impossible[0]} loss; set its weight to 0")

  @abc.abstractmethod
  def build(self, config: ml_collections.ConfigDict) -> nnx.Module:
    """The model at the start of training: initialized, then the parts `init` gives."""

  @abc.abstractmethod
  def abstract(self, config: ml_collections.ConfigDict) -> nnx.Module:
    """The model's structure without computing any parameter (a resumed run restores them)."""

  @abc.abstractmethod
  def trainable(self, train_flow: bool = True) -> nnx.filterlib.Filter:
    """Which variables the optimizer updates (`train_flow`: CFCA's flow network too, see `trains_flow`)."""

  @abc.abstractmethod
  def losses(self, plan: plan_lib.ExecutionPlan, model: nnx.Module, batch: Mapping[str, jax.Array],
             weights: Mapping[str, float], perceptual_kind: str, perceptual_params,
             pixel_range: str) -> dict[str, jax.Array]:
    """The loss terms a stage weights (terms of weight 0 are not computed), computed under `plan`."""

  @abc.abstractmethod
  def output(self, plan: plan_lib.ExecutionPlan, model: nnx.Module, batch: Mapping[str, jax.Array]) -> jax.Array:
    """What the model makes of the batch under `plan`, in [-1, 1], to set beside its HR clip."""

  @abc.abstractmethod
  def export(self, model: nnx.Module, config: ml_collections.ConfigDict, directory: pathlib.Path) -> None:
    """Writes the trained model as the checkpoint infer.py or `init` reads."""


def model_config(config: ml_collections.ConfigDict) -> diffst.DiffSTConfig:
  return diffst.DiffSTConfig.from_dict(config.model.to_dict())


# The parts `init` may set, and how a checkpoint of one that is not a whole trained DiffST is read (converted Wan2.1 /
# diffusers weights); CFCA and VRG come only from a trained DiffST.
PARTS = ("vae", "dit", "cfca", "vrg")
IDENTITY_VAE = "identity"  # init.vae: weights that make the VAE reconstruct its input (models/vae.py set_identity)
_CONVERTED = {"vae": vae_convert.load_vae, "dit": dit_convert.load_dit}


def load_part(path: str, fresh: nnx.Module, what: str) -> nnx.Module:
  """The part at `path` in place of the `fresh` one, whose architecture it must have (dtypes and other settings of
  ours, `OWN_FIELDS`, come from the training config). `path` may also be a trained DiffST (train.py's `model/`, or
  weights/tiny): its `what` part is taken."""
  if diffst.is_diffst(path):
    part = diffst.load(path, part=what)
  elif what in _CONVERTED:
    part = _CONVERTED[what](path)
  else:
    raise ValueError(f"init.{what} = {path} is not a trained DiffST; {what} weights come only from one (train.py's "
                     "model/ directory, or weights/tiny)")
  expected = fresh.config
  differ = [f.name for f in dataclasses.fields(expected)
            if f.name not in expected.OWN_FIELDS and getattr(part.config, f.name) != getattr(expected, f.name)]
  if differ:
    raise ValueError(f"init.{what} = {path} has another {what} config (differs in {', '.join(differ)}) than "
                     f"model.{what} of the training config; make them match")
  shapes = lambda module: jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(module)))  # noqa: E731
  if shapes(part) != shapes(fresh):  # e.g. VRG's tokens sized for another DiT's text_dim
    raise ValueError(f"init.{what} = {path} has parameters shaped unlike model.{what} of the training config; "
                     "make the configs match")
  return nnx.merge(nnx.graphdef(fresh), nnx.state(part))


def load_flow(path: str, fresh: nnx.Module) -> nnx.Module:
  """CFCA's flow network from `path`: BasicSR SpyNet weights (a `.pth`), or a trained DiffST's."""
  if diffst.is_diffst(path):
    return diffst.load(path, part="cfca").flow
  try:
    state_dict = torch_io.StateDict(path)
    # BasicSR's SpyNet stores its fixed ImageNet normalization as buffers; ours is a constant of the model.
    return spynet.load_basicsr_weights(fresh, {k: v for k, v in state_dict.items() if k not in ("mean", "std")})
  except torch_io.CheckpointError as e:
    raise ValueError(f"init.flow = {path}: {e}; expected BasicSR SpyNet weights (.pth) or a trained DiffST") from e


def trains_flow(config: ml_collections.ConfigDict) -> bool:
  """Whether CFCA's flow network trains: when it starts from random weights, or `init.train_flow` says so; given
  pretrained weights (`init.flow`) it is frozen, as DOVE freezes its RAFT."""
  return not config.init.flow or config.init.train_flow


class DiffSTTask(Task):
  name = "diffst"
  uses_lr = True
  loss_terms = LOSS_TERMS

  def build(self, config):
    if not config.init.vae:
      raise ValueError("the diffst task freezes the VAE, so it needs trained VAE weights: set --config.init.vae "
                       "(a Wan2.1 VAE, for a new VAE size the model/ of a configs/*_vae.py run, or 'identity' for a "
                       "VAE whose latent is its folded input)")
    sizes = model_config(config)
    model = diffst.init(sizes, config.seed)
    for part in PARTS:
      if part == "vae" and config.init.vae == IDENTITY_VAE:
        vae_lib.set_identity(model.vae)
      elif config.init[part]:
        setattr(model, part, load_part(config.init[part], getattr(model, part), part))
    if config.init.flow:
      model.cfca.flow = load_flow(config.init.flow, model.cfca.flow)
    if config.init.null_context:
      model.null_context[...] = jnp.asarray(null_context.load(config.init.null_context, sizes.context_tokens,
                                                               sizes.dit.text_dim))
    if config.init.zero_residuals and not config.init.dit:
      dit_lib.zero_output(model.dit)
    return model

  def abstract(self, config):
    return abstract(lambda rngs: diffst.DiffST(model_config(config), rngs=rngs))

  def trainable(self, train_flow=True):
    frozen = ("vae",) if train_flow else ("vae", "flow")
    return nnx.All(nnx.Param, *(nnx.Not(nnx.PathContains(name)) for name in frozen))

  def losses(self, plan, model, batch, weights, perceptual_kind, perceptual_params, pixel_range):
    hr = losses.to_unit_range(batch["hr"])
    z_hat = model.denoised_latent(plan, losses.to_unit_range(batch["lr"]))
    terms = {}
    if weights.get("latent"):
      terms["latent"] = losses.latent_loss(z_hat, jax.lax.stop_gradient(model.vae.encode(plan, hr)))
    if any(weights.get(term) for term in PIXEL_TERMS):
      terms.update(losses.pixel_terms(plan, model.vae.decode(plan, z_hat), hr, weights, perceptual_kind,
                                      perceptual_params, pixel_range))
    return terms

  def output(self, plan, model, batch):
    return model(plan, losses.to_unit_range(batch["lr"]))

  def export(self, model, config, directory):
    # the model's input is every time_scale-th frame of the HR training clip; it runs on whole frames (no "tile":
    # its guidance and attention are meant to see the frame, chunking.plan_for)
    diffst.save(model, directory, trained_sizes={
        "chunk_frames": (config.data.clip_frames - 1) // model.config.time_scale + 1})


class AutoencoderTask(Task):
  name = "autoencoder"
  uses_lr = False
  loss_terms = PIXEL_TERMS

  def build(self, config):
    vae = WanVAE(model_config(config).vae, rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")))
    if config.init.vae == IDENTITY_VAE:
      vae_lib.set_identity(vae)
      return vae
    if config.init.vae:
      return load_part(config.init.vae, vae, "vae")
    if config.init.zero_residuals:
      vae_lib.zero_residual_branches(vae)
    return vae

  def abstract(self, config):
    return abstract(lambda rngs: WanVAE(model_config(config).vae, rngs=rngs))

  def trainable(self, train_flow=True):
    return nnx.Param

  def losses(self, plan, model, batch, weights, perceptual_kind, perceptual_params, pixel_range):
    hr = losses.to_unit_range(batch["hr"])
    return losses.pixel_terms(plan, model.decode(plan, model.encode(plan, hr)), hr, weights, perceptual_kind,
                              perceptual_params, pixel_range)

  def output(self, plan, model, batch):
    return model.decode(plan, model.encode(plan, losses.to_unit_range(batch["hr"])))

  def export(self, model, config, directory):
    vae_convert.save(model, directory)


TASKS = {task.name: task for task in (DiffSTTask(), AutoencoderTask())}


def get(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f"task must be one of {tuple(TASKS)}, got {name!r}")
  return TASKS[name]
