"""Full-reference image quality of upsampled clips: PSNR and SSIM against the ground truth, and the classic
upsampling baselines (bilinear, bicubic) a super-resolution model must beat.

Clips are uint8 `[N, T, H, W, 3]` (or any `[..., H, W, C]`); every figure is a mean over clips, frames and
channels. SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity"): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03 on the 0-255 range, per channel, the
map averaged away from the border the window does not fit (as scikit-image's `gaussian_weights=True`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

PEAK = 255.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # an 11x11 window: 3.5 sigma, truncated
SSIM_K1, SSIM_K2 = 0.01, 0.03
BASELINES = ("bilinear", "bicubic")


def _as_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"image_quality compares uint8 clips, got {x.dtype}: convert with video_io.to_uint8.")
    return x.astype(np.float64)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"Clips of shape {np.shape(a)} and {np.shape(b)} cannot be compared: give the same shape.")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    _check_pair(a, b)
    return float(((_as_float(a) - _as_float(b)) ** 2).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of the mean squared error over everything (inf for identical clips)."""
    error = mse(a, b)
    return float("inf") if error == 0 else float(10 * np.log10(PEAK ** 2 / error))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute error in uint8 levels."""
    _check_pair(a, b)
    return float(np.abs(_as_float(a) - _as_float(b)).mean())


def _blur(x: np.ndarray) -> np.ndarray:
    """The Gaussian window over the two image axes of [..., H, W, C]."""
    sigma = [0.0] * (x.ndim - 3) + [SSIM_SIGMA, SSIM_SIGMA, 0.0]
    return ndimage.gaussian_filter(x, sigma, truncate=SSIM_RADIUS / SSIM_SIGMA, mode="reflect")


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The SSIM of every pixel and channel, [..., H - 10, W - 10, C]: the window's full interior."""
    _check_pair(a, b)
    x, y = _as_float(a), _as_float(b)
    if x.shape[-3] <= 2 * SSIM_RADIUS or x.shape[-2] <= 2 * SSIM_RADIUS:
        raise ValueError(f"SSIM needs frames larger than {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1}, got "
                         f"{x.shape[-3]}x{x.shape[-2]}.")
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    mu_x, mu_y = _blur(x), _blur(y)
    var_x = _blur(x * x) - mu_x ** 2
    var_y = _blur(y * y) - mu_y ** 2
    cov = _blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    r = SSIM_RADIUS
    return s[..., r:-r, r:-r, :]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity: 1 for identical clips, lower as structure, contrast or brightness differ."""
    return float(ssim_map(a, b).mean())


def upsample(low: np.ndarray, resolution: int, method: str) -> np.ndarray:
    """A baseline upsampling of clips in [-1, 1], [N, T, h, w, C] -> [N, T, R, R, C], clipped to [-1, 1] (bicubic
    overshoots at edges); half-pixel centres as jax.image.resize, the SSR's own conditioning resize."""
    if method not in BASELINES:
        raise ValueError(f"Upsampling method {method!r} is not one of {BASELINES}.")
    low = jnp.asarray(low, jnp.float32)
    out = jax.image.resize(low, low.shape[:-3] + (resolution, resolution, low.shape[-1]), method=method)
    return np.asarray(jnp.clip(out, -1.0, 1.0))


def compare(clips_uint8: np.ndarray, reference_uint8: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and MAE of clips against the reference, both uint8."""
    return {"psnr": psnr(clips_uint8, reference_uint8), "ssim": ssim(clips_uint8, reference_uint8),
            "mae": mae(clips_uint8, reference_uint8)}
