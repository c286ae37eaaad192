"""Training OSEDiff: the train state, the VSD objective and the jitted step, training checkpoints.
May import: every other subpackage (files, models, weights, data, inference, metrics)."""
