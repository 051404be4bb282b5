"""Spatially structured random fields (not white noise) for the demo world."""

from __future__ import annotations

import numpy as np

__all__ = ["fractal_noise", "block_mean"]


def fractal_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance field with a 1/f**beta power spectrum (beta 2-3 looks like terrain)."""
    ny, nx = shape
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    phase = rng.standard_normal((ny, nx // 2 + 1)) + 1j * rng.standard_normal((ny, nx // 2 + 1))
    field = np.fft.irfft2(amp * phase, s=(ny, nx))
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks (trailing edges must divide exactly)."""
    ny, nx = a.shape[-2:]
    if ny % factor or nx % factor:
        raise ValueError(f"shape {a.shape} is not divisible by block factor {factor}")
    new = a.shape[:-2] + (ny // factor, factor, nx // factor, factor)
    return a.reshape(new).mean(axis=(-3, -1))
