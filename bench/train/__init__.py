"""Training the suite's own models on the shapes world (bench/shapes/): the VQGAN, the base and super-res
transformers with their text encoder, and a small CLIP, from a named recipe (recipe.py) into a cache folder keyed
by the recipe (world.py). One loop (loop.py) runs every stage: deterministic from the recipe's seed, resumable from
atomic safetensors checkpoints (checkpoint.py), data-parallel under torchrun (gloo on CPU)."""
