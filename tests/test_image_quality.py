"""PSNR, SSIM and the upsampling baselines that the SSR is measured against (lumiere_jax/eval/image_quality.py)."""

import numpy as np
import pytest

from lumiere_jax.eval import image_quality as iq


def noisy(clip: np.ndarray, std: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clip + rng.normal(0, std, clip.shape), 0, 255).round().astype(np.uint8)


@pytest.fixture
def clip() -> np.ndarray:
    """Two clips of 3 frames, 24x24, with structure: gradients and a square."""
    y, x = np.mgrid[:24, :24]
    frame = np.stack([x * 10, y * 10, ((x // 6 + y // 6) % 2) * 200], -1).astype(np.float64)
    frame[8:16, 8:16] = 250
    return np.broadcast_to(frame, (2, 3, 24, 24, 3)).round().astype(np.uint8).copy()


def test_identical_clips(clip):
    assert iq.ssim(clip, clip) == pytest.approx(1.0)
    assert iq.psnr(clip, clip) == float("inf")
    assert iq.mae(clip, clip) == 0


def test_psnr_of_one_level_everywhere():
    a = np.full((1, 2, 16, 16, 3), 100, np.uint8)
    assert iq.psnr(a, a + 1) == pytest.approx(10 * np.log10(255 ** 2))  # 48.13 dB
    assert iq.mae(a, a + 1) == 1


def test_ssim_of_flat_frames_is_the_luminance_term():
    """No variance and no covariance: contrast and structure terms are C2 / C2 = 1, only luminance is left."""
    a = np.full((1, 1, 16, 16, 3), 50, np.uint8)
    b = np.full((1, 1, 16, 16, 3), 150, np.uint8)
    c1 = (iq.SSIM_K1 * 255) ** 2
    assert iq.ssim(a, b) == pytest.approx((2 * 50 * 150 + c1) / (50 ** 2 + 150 ** 2 + c1), rel=1e-9)


def test_ssim_is_symmetric_and_falls_with_noise(clip):
    scores = [iq.ssim(noisy(clip, std, 0), clip) for std in (2, 8, 32)]
    assert scores[0] > scores[1] > scores[2]
    other = noisy(clip, 8, 1)
    assert iq.ssim(other, clip) == pytest.approx(iq.ssim(clip, other))


def test_ssim_sees_structure_that_psnr_does_not(clip):
    """A blur and a uniform brightness shift of about the same MSE: SSIM punishes the lost structure far more."""
    from scipy import ndimage
    blurred = ndimage.uniform_filter(clip.astype(np.float64), (0, 0, 3, 3, 0)).round().astype(np.uint8)
    shift = int(round(np.sqrt(iq.mse(blurred, clip))))
    brighter = np.clip(clip.astype(int) + shift, 0, 255).astype(np.uint8)
    assert iq.psnr(brighter, clip) == pytest.approx(iq.psnr(blurred, clip), abs=1.5)
    assert iq.ssim(brighter, clip) > iq.ssim(blurred, clip) + 0.1


def test_bad_pairs_are_refused(clip):
    with pytest.raises(ValueError, match="same shape"):
        iq.psnr(clip, clip[:, :2])
    with pytest.raises(ValueError, match="uint8"):
        iq.ssim(clip.astype(np.float32), clip.astype(np.float32))
    with pytest.raises(ValueError, match="larger than 11x11"):
        iq.ssim(clip[..., :8, :8, :], clip[..., :8, :8, :])
    with pytest.raises(ValueError, match="not one of"):
        iq.upsample(np.zeros((1, 1, 4, 4, 3)), 8, "lanczos7")


def test_bicubic_restores_a_smooth_clip_better_than_bilinear():
    """Samples of a smooth field at the low resolution's pixel centres, upsampled 2x: bicubic (third-order
    accurate) lands far closer to the field at the high resolution's centres than bilinear, away from the border."""
    def field(n: int) -> np.ndarray:
        c = (np.arange(n) + 0.5) / n  # pixel centres in [0, 1]
        y, x = np.meshgrid(c, c, indexing="ij")
        f = 0.8 * np.sin(2.2 * x + 0.7) * np.cos(1.7 * y)
        return np.broadcast_to(f[..., None], (1, 1, n, n, 3))

    low, high = field(16), field(32)
    err = {m: np.abs(iq.upsample(low, 32, m) - high)[..., 4:-4, 4:-4, :].max() for m in iq.BASELINES}
    assert err["bicubic"] < err["bilinear"] / 4
    assert iq.upsample(np.full((1, 1, 4, 4, 3), 0.99), 8, "bicubic").max() <= 1.0  # clipped to the model's range
