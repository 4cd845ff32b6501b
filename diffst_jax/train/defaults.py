"""The training recipe every experiment config starts from (DESIGN §7 losses and schedule, §8 data).

Configs call `training_defaults()` and set `model` (a DiffSTConfig as nested dicts) and what differs.
"""

import ml_collections

from diffst_jax.parallel import rules


def stage(steps: int, learning_rate: float, warmup_steps: int, fresh_optimizer: bool = False,
          **loss_weights: float) -> ml_collections.ConfigDict:
  weights = dict(latent=0.0, rec=0.0, perceptual=0.0, consistency=0.0)
  weights.update(loss_weights)
  # decay: "constant" holds the learning rate after warm-up, "cosine" decays it to 0 at the stage's end.
  # fresh_optimizer: the stage starts with new Adam moments (as a separate launch from the last stage's weights).
  return ml_collections.ConfigDict(dict(steps=steps, learning_rate=learning_rate, warmup_steps=warmup_steps,
                                        decay="constant", fresh_optimizer=fresh_optimizer, loss=weights))


# Settings added since runs were recorded whose default changes what a run does, and the value a run recorded
# without them had (a resumed run must keep it; a last key matches that key under any stage).
BEFORE_THEY_EXISTED = {"pixel_range": "symmetric", "data.degradation": "earlier", "fresh_optimizer": False}


def training_defaults() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "diffst"  # or "autoencoder": train the VAE alone (stage 0 for a VAE without pretrained weights)
  config.seed = 0
  config.init = ml_collections.ConfigDict(dict(
      # our VAE checkpoint, a diffusers directory or a Wan2.1 .pth; "identity": weights that make a VAE whose latent is
      # its folded input reconstruct it (models/vae.py set_identity); empty: random (autoencoder task only)
      vae="",
      dit="",  # our DiT checkpoint, a diffusers directory or Wan2.1 safetensors; empty: random
      cfca="",  # a trained DiffST (a run's model/, weights/tiny) to fine-tune from; empty: random
      vrg="",  # likewise
      flow="",  # CFCA's SpyNet: BasicSR SpyNet weights (.pth) or a trained DiffST; empty: random (or init.cfca's)
      train_flow=False,  # with init.flow: train the flow network too (default: frozen, as DOVE freezes its RAFT)
      null_context="",  # the empty-prompt embedding (.npy, .safetensors or .pt; tools/empty_prompt_embedding.py)
      # Parts made here (not loaded) start with their residual branches at zero: the VAE's residual blocks and
      # attention, the DiT's output projection (CFCA's fusion always does), so an untrained VAE is near a linear map
      # and an untrained DiffST returns the interpolated, upscaled input through its VAE.
      zero_residuals=False,
  ))
  config.data = ml_collections.ConfigDict(dict(
      videos="",  # folder of HR training videos
      prepared="",  # where the TFDS dataset is written; empty: <workdir>/data
      clip_frames=17,  # HR frames per training clip, 4k+1
      crop_size=256,
      degradation_window=0,  # HR pixels the space degradation sees around each crop; 0: the crop (data/pipeline.py)
      augment=False,  # random flips (left-right, top-bottom, in time) and transposes of what is degraded
      # "dove": DOVE's degradations as far as data/degrade.py follows them (docs/TRAINING.md lists what is left);
      # "earlier": this project's before (first-order video compression off, codec stream at 25 fps); "bicubic":
      # clean input; several joined by "+" ("dove+earlier+bicubic"): one drawn per example at equal odds
      degradation="dove",
      batch_size=1,
      workers=0,
  ))
  # Stages run in the order of their names; a stage's loss weights say which terms it computes.
  config.stages = ml_collections.ConfigDict(dict(
      stage1=stage(10_000, 2e-5, 100, latent=1.0),
      # DOVE's second stage (finetune/train_ddp_one_s2.sh) is a new launch from the first's weights: fresh AdamW
      # state and its own 100-step warm-up (args.py's default).
      stage2=stage(500, 5e-6, 100, fresh_optimizer=True, rec=1.0, perceptual=1.0, consistency=1.0),
  ))
  # "unit": the pixel losses (rec, consistency) and the perceptual loss see the decoded clip clamped to [0, 1] and the
  # target in [0, 1], as DOVE computes them (finetune/models/dove/lora_one_s2_trainer.py); "symmetric": [-1, 1],
  # unclamped, which weighs L_rec 4x and L_consis 2x more against the perceptual loss (the tiny recipe's).
  config.pixel_range = "unit"
  config.perceptual = "dists"  # or "lpips" (VGG), "lpips_alex" (cheap on CPU)
  # ema_decay, e.g. 0.999: keep an exponential moving average of the trained parameters, exported as model/; 0: none
  # learning_rate_scale: {part: factor} multiplies a part's (cfca, vrg, dit) learning rate over the stage's, for
  # parts that start from scratch beside a pretrained DiT (optax.multi_transform); empty: one rate for all.
  config.optimizer = ml_collections.ConfigDict(dict(b1=0.9, b2=0.95, eps=1e-8, weight_decay=1e-4, clip_norm=0.1,
                                                    ema_decay=0.0, learning_rate_scale={}))
  config.mesh = ""  # e.g. "data=2,fsdp=1,context=4,tensor=1" over all devices (one size may be -1); empty: one device
  config.logical_axis_rules = rules.DEFAULT_RULES  # logical axis -> mesh axes (diffst_jax/parallel/rules.py)
  # "auto": matrix-product convolutions ("gemm") when training on CPU, XLA's own elsewhere; or "xla", "gemm".
  config.conv_implementation = "auto"
  # How attention runs (parallel/plan.py): "auto" is splash on TPU, cuDNN on GPU, XLA elsewhere (or "xla", "blockwise",
  # "splash", "cudnn"); blockwise's key block; self-attention's context-parallel mode ("allgather_kv", "ulysses",
  # "ring").
  config.attention = "auto"
  config.attention_block_size = 512
  config.context_parallel = "allgather_kv"
  config.log_every = 10
  config.strip_every = 500  # steps between TensorBoard strips of a clip's output beside its ground truth; 0: none
  config.checkpoint_every = 500
  config.keep_checkpoints = 3
  return config
