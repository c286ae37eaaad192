"""Files: atomic writes of files and folders, and image files (8/16-bit, alpha, gray, EXIF).
Imports nothing from osediff_jax."""
