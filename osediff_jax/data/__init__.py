"""Training data and pixel operations: resizing as each reference does it, DiffJPEG, the
Real-ESRGAN degradation on device, and the tfds/grain datasets.
May import: files, models, weights."""
