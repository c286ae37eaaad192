"""Image-quality metrics with the conventions of pyiqa 0.1.10, as the OSEDiff authors ran them,
their registry, and folder evaluation.
May import: files, models, weights, data, inference."""
