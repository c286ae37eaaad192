"""README's first command, at a small size."""

import numpy as np
from PIL import Image

from osediff_jax import demo


def test_demo_writes_three_images(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "out"), "--size", "64"]) == 0
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out").iterdir()}
    assert sizes == {"lq.png": (16, 16), "bicubic.png": (64, 64), "sr.png": (64, 64)}
    assert np.asarray(Image.open(tmp_path / "out" / "sr.png")).std() > 0
    assert "random" in capsys.readouterr().out
