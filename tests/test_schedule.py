import numpy as np
import pytest

from osediff_jax.models import schedule


def test_alpha_bar_999_matches_sd21():
    a = schedule.alphas_cumprod()
    assert a.dtype == np.float32 and a.shape == (1000,)
    np.testing.assert_allclose(a[999], 0.0046601, rtol=1e-4)
    assert np.all(np.diff(a) < 0)


@pytest.mark.reference
def test_matches_diffusers_ddpm_scheduler():
    import diffusers
    ref = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    np.testing.assert_array_equal(schedule.alphas_cumprod(), ref.alphas_cumprod.numpy())


def test_unsupported_prediction_type_is_named():
    with pytest.raises(ValueError, match="prediction_type='v_prediction'"):
        schedule.alphas_cumprod_from_config({"prediction_type": "v_prediction"})
