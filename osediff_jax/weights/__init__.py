"""Weight formats: torch <-> Flax tensors, diffusers folders, our Orbax model bundles, the authors'
osediff.pkl, and random SD-shaped models for trying things without weights.
May import: files, models."""
