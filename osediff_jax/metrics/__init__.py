"""Image-quality metrics with the conventions of pyiqa 0.1.10, as the OSEDiff authors ran it."""
