"""The command lines, as functions `main(argv=None) -> int` of the package (entry points `diffst-upscale`,
`diffst-train`, `diffst-evaluate`, `diffst-convert`; in a checkout also infer.py, train.py, evaluate.py and
convert_torch_weights.py). Their errors and exit codes follow diffst_jax/cli.py."""
