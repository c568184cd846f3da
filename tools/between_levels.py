#!/usr/bin/env python
"""How far qualities between the trained levels (6.5: interpolated gains) lie from the curve
through the levels, from two benchmark results (no measuring):

    python tools/between_levels.py benchmarks/kodak/aecodec.json benchmarks/between-levels/aecodec.json

LEVELS is `aecodec bench`'s aecodec.json at the whole levels, BETWEEN the same for qualities
between them (`aecodec bench DIR --codecs aecodec --grid aecodec=1.5,2.5,...`).  For each point of
BETWEEN it prints its bpp, PSNR-RGB and MS-SSIM (dB) and their distance, at its own rate, from
the PCHIP curve through LEVELS (quality against log rate, as the BD-rates interpolate) and from
the straight line between its two neighbouring levels.  Positive: above the curve.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rows(levels: dict, between: dict):
    """[(quality, bpp, {metric: (value, off the curve, off the chord)})] for each BETWEEN point
    inside LEVELS' rate range."""
    from scipy.interpolate import PchipInterpolator

    from aecodec.bdrate import msssim_db

    metrics = {"PSNR": lambda r: np.asarray(r["psnr-rgb"], float), "MS-SSIM dB": lambda r: msssim_db(r["ms-ssim-rgb"])}
    lx = np.log(np.asarray(levels["bpp"], float))
    order = np.argsort(lx)
    out = []
    for i, (q, bpp) in enumerate(zip(between["quality"], between["bpp"])):
        x = float(np.log(bpp))
        if not lx[order[0]] <= x <= lx[order[-1]]:
            continue
        k = int(np.searchsorted(lx[order], x))
        lo, hi = order[max(k - 1, 0)], order[min(k, len(order) - 1)]
        got = {}
        for name, f in metrics.items():
            ly, v = f(levels), float(f(between)[i])
            if not (np.isfinite(ly).all() and np.isfinite(v)):
                continue
            curve = float(PchipInterpolator(lx[order], ly[order])(x))
            chord = ly[lo] if hi == lo else ly[lo] + (ly[hi] - ly[lo]) * (x - lx[lo]) / (lx[hi] - lx[lo])
            got[name] = (v, v - curve, v - float(chord))
        out.append((q, float(bpp), got))
    return out


def main(argv=None) -> int:
    from aecodec._argparse import OneLineParser as Parser

    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("levels", help="aecodec.json at the whole levels")
    p.add_argument("between", help="aecodec.json at qualities between them")
    a = p.parse_args(argv)
    data = []
    for f in (a.levels, a.between):
        try:
            data.append(json.loads(Path(f).read_text())["results"])
        except (OSError, ValueError, KeyError) as e:
            p.error(f"{f}: not a benchmark result ({type(e).__name__}: {e})")
    table = rows(*data)
    if not table:
        print("no point of BETWEEN lies within the rates of LEVELS")
        return 1
    print("| quality | bpp | PSNR (dB) | off the curve | off the chord | MS-SSIM (dB) | off the curve | off the chord |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for q, bpp, got in table:
        cells = []
        for name in ("PSNR", "MS-SSIM dB"):
            v = got.get(name)
            cells += [f"{v[0]:.3f}", f"{v[1]:+.3f}", f"{v[2]:+.3f}"] if v else ["–"] * 3
        print(f"| {q:g} | {bpp:.4f} | " + " | ".join(cells) + " |")
    worst = {n: max(abs(g[n][1]) for _, _, g in table if n in g) for n in ("PSNR", "MS-SSIM dB")}
    print(f"\nlargest distance from the curve: {worst['PSNR']:.3f} dB PSNR, {worst['MS-SSIM dB']:.3f} dB MS-SSIM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
