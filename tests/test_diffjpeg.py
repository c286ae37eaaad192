"""osediff_jax.diffjpeg against basicsr 1.4.2's DiffJPEG(differentiable=False) on photographs."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osediff_jax.data.diffjpeg import (
    decode_coefficients,
    diffjpeg,
    jpeg_coefficients,
    quality_to_factor,
)
from tests.references.degradation import diffjpeg as ref_jpeg
from tests.references.degradation import photos

pytestmark = pytest.mark.reference

QUALITIES = np.array([30.0, 41.37, 49.99, 50.0, 63.2, 77.7, 88.8, 95.0], np.float32)


@pytest.fixture(scope="module")
def case():
    # 8 photographs, cropped to a size that needs DiffJPEG's padding to multiples of 16.
    x = photos(8, 512)[:, :250, :203].astype(np.float32) / 255.0
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    factor = ref_quality_factor(QUALITIES)
    padded = F.pad(xt, (0, -203 % 16, 0, -250 % 16))
    with torch.no_grad():
        raw = ref_jpeg.CompressJpeg(rounding=lambda v: v)(padded, factor=factor)
        out = ref_jpeg.DiffJPEG(differentiable=False)(xt, quality=torch.from_numpy(QUALITIES.copy()))
    return x, [r.numpy() for r in raw], out.permute(0, 2, 3, 1).numpy()


def ref_quality_factor(q):
    return torch.stack([ref_jpeg.quality_to_factor(torch.tensor(v)) for v in q])


def test_quality_factor_bit_identical():
    q = np.linspace(1, 100, 2000, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(quality_to_factor(jnp.asarray(q))), ref_quality_factor(q).numpy())


def test_quantized_coefficients_identical_off_rounding_boundaries(case):
    x, raw, _ = case
    ours = jpeg_coefficients(jnp.asarray(x), jnp.asarray(QUALITIES))
    total, flips, boundary = 0, 0, 0
    for r, o in zip(raw, ours):
        o = np.asarray(o)
        assert o.shape == r.shape
        near = np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-4
        differ = o != np.round(r)
        assert not (differ & ~near).any(), "coefficients differ away from a rounding boundary"
        total += r.size
        flips += differ.sum()
        boundary += near.sum()
    print(f"diffjpeg: {flips} of {total} coefficients differ, all within 1e-4 of .5 ({boundary} such)")
    assert flips <= boundary


def test_decoding_matches_reference(case):
    x, raw, _ = case
    coefs = [np.round(r) for r in raw]  # the reference's quantized coefficients, decoded by both
    ours = np.asarray(decode_coefficients(*(jnp.asarray(c) for c in coefs), jnp.asarray(QUALITIES), (250, 203)))
    factor = ref_quality_factor(QUALITIES)
    with torch.no_grad():
        ref = ref_jpeg.DeCompressJpeg()(*(torch.from_numpy(c) for c in coefs), 256, 208, factor=factor)
    np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy()[:, :250, :203], atol=1e-5, rtol=0)


def test_diffjpeg_matches_reference(case):
    """End to end: equal to 1e-5 except in blocks where a boundary coefficient rounded differently."""
    x, _, ref = case
    out = np.asarray(diffjpeg(jnp.asarray(x), jnp.asarray(QUALITIES)))
    err = np.abs(out - ref)
    bad = err > 1e-5
    assert bad.mean() < 1e-3, f"{bad.mean():.2e} of values differ by more than 1e-5"
    assert np.abs(out - ref).mean() < 1e-6
