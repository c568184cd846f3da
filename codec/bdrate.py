"""Bjøntegaard delta rate (BD-rate) with PCHIP interpolation.

The BD-rate of a test curve against an anchor curve is the mean difference of
their log-rates over the quality interval both curves cover, turned back into a
percentage: ``100 * (exp(mean(ln R_test - ln R_anchor)) - 1)``.  Negative means
the test codec needs fewer bits than the anchor for the same quality.

Each curve's log-rate is interpolated as a function of quality (PSNR in dB, or
MS-SSIM in dB) with a piecewise cubic Hermite interpolant (PCHIP, the
shape-preserving variant used by current VCEG/JVET practice instead of
Bjøntegaard's original cubic polynomial fit), and integrated exactly over the
overlap of the two quality ranges.  Nothing is extrapolated: the overlap is
reported with every result, and no overlap means no result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

METHOD = "PCHIP"


@dataclass
class BDResult:
    """A BD-rate and the interval it was computed over."""

    rate: float  # percent; negative = fewer bits than the anchor
    lo: float  # overlap of the two quality ranges (dB)
    hi: float
    anchor_bpp: Tuple[float, float]  # the anchor's rates at lo and hi (interpolated)
    test_bpp: Tuple[float, float]
    anchor_fraction: float  # share of each curve's quality span that lies in the overlap
    test_fraction: float

    def __str__(self) -> str:
        return f"{self.rate:+.1f} % [{self.lo:.2f}-{self.hi:.2f}]"


def _curve(rate: Sequence[float], quality: Sequence[float]):
    """(quality ascending, log-rate) with non-finite points dropped and equal
    qualities merged (PCHIP needs strictly increasing abscissae)."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError("rate and quality must be 1-D sequences of the same length")
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.argsort(q, kind="stable")
    q, lr = q[order], np.log(r[order])
    if q.size:
        uq, inv = np.unique(q, return_inverse=True)
        lr = np.bincount(inv, weights=lr) / np.bincount(inv)
        q = uq
    return q, lr


def bd_rate_details(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
                    test_rate: Sequence[float], test_quality: Sequence[float]) -> Optional[BDResult]:
    """BD-rate of ``test`` against ``anchor`` (PCHIP), or None when the curves
    have fewer than two usable points or their quality ranges do not overlap."""
    from scipy.interpolate import PchipInterpolator

    qa, la = _curve(anchor_rate, anchor_quality)
    qt, lt = _curve(test_rate, test_quality)
    if qa.size < 2 or qt.size < 2:
        return None
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        return None
    pa, pt = PchipInterpolator(qa, la), PchipInterpolator(qt, lt)
    mean_diff = (pt.integrate(lo, hi) - pa.integrate(lo, hi)) / (hi - lo)
    return BDResult(
        rate=100.0 * (math.exp(mean_diff) - 1.0),
        lo=float(lo), hi=float(hi),
        anchor_bpp=(float(np.exp(pa(lo))), float(np.exp(pa(hi)))),
        test_bpp=(float(np.exp(pt(lo))), float(np.exp(pt(hi)))),
        anchor_fraction=float((hi - lo) / (qa[-1] - qa[0])),
        test_fraction=float((hi - lo) / (qt[-1] - qt[0])),
    )


MIN_POINTS = 4  # per curve, for a reported BD-rate: with fewer, the figure is the interpolation's


def bd_rate_reported(anchor_rate, anchor_quality, test_rate, test_quality) -> Tuple[Optional[BDResult], str]:
    """What a report may show: (result, "") or (None, why there is no figure): no data,
    fewer than MIN_POINTS distinct points on a curve (two points give a number, but one
    that only says how a straight line was drawn), or no overlap."""
    n = min(_curve(anchor_rate, anchor_quality)[0].size, _curve(test_rate, test_quality)[0].size)
    if n == 0:
        return None, "no data"
    if n < MIN_POINTS:
        return None, f"{n} point{'s' if n > 1 else ''}, needs {MIN_POINTS}"
    r = bd_rate_details(anchor_rate, anchor_quality, test_rate, test_quality)
    return (r, "") if r is not None else (None, "no overlap")


def bd_rate(anchor_rate, anchor_quality, test_rate, test_quality) -> float:
    """BD-rate in percent (NaN when there is no overlap)."""
    r = bd_rate_details(anchor_rate, anchor_quality, test_rate, test_quality)
    return float("nan") if r is None else r.rate


def msssim_db(ms_ssim) -> np.ndarray:
    """MS-SSIM in dB: -10 log10(1 - MS-SSIM)."""
    v = np.asarray(ms_ssim, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -10.0 * np.log10(1.0 - v)
