#!/usr/bin/env python
"""What tiling costs: code one image untiled and tiled, compare rate and quality.

    python tools/tiling_cost.py IMAGE [--quality 5] [--tiles 64 16]

For each tile size (in latent positions; 64 = 1024 px, the default) prints the
number of tiles, the file size in bits per pixel, the PSNR, how many latents
round differently from the untiled run, and how many decoded subpixels differ.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", help="the image to code")
    ap.add_argument("--quality", type=int, default=5, help="level 1..8 (default: %(default)s)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[64, 16],
                    help="tile sides to compare with the untiled result, in latent positions (x16 pixels: "
                         "64 = 1024 px, the default tiling) (default: %(default)s)")
    args = ap.parse_args(argv)

    import torch

    from aecodec import coding
    from aecodec.api import _pad
    from aecodec.weights import load_model

    img = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = img.shape[:2]
    x = _pad(img)
    model = load_model()
    level = args.quality - 1
    g, _ = coding._gains(model, level)

    def code(tile):
        t0 = time.time()
        enc = coding.encode(model, x, level, tile=tile)
        t1 = time.time()
        out = coding.decode(model, enc.z_string, enc.y_string, enc.guard, enc.z_shape, level, h, w, tile=tile)
        t2 = time.time()
        bits = 8 * (len(enc.z_string) + len(enc.y_string) + len(enc.guard))
        mse = ((out.astype(np.float64) - img) ** 2).mean()
        return enc, out, bits / (h * w), 10 * np.log10(255.0**2 / mse), t1 - t0, t2 - t1

    big = max(x.shape[:2]) // 16 + 1
    ref_enc, ref_out, ref_bpp, ref_psnr, te, td = code(big)
    y_ref, _ = coding.analysis(model, x, g, tile=big)
    print(f"{args.image}: {w}x{h}, quality {args.quality}")
    print(f"  untiled          : 1 tile,   {ref_bpp:.5f} bpp, {ref_psnr:.4f} dB  (encode {te:.1f} s, decode {td:.1f} s)")
    for tile in args.tiles:
        enc, out, bpp, p, te, td = code(tile)
        y, _ = coding.analysis(model, x, g, tile=tile)
        flips = int((torch.round(y) != torch.round(y_ref)).sum())
        diff = int((out != ref_out).sum())
        print(f"  tile {tile:3d} ({tile * 16} px): {enc.tiles} tiles, {bpp:.5f} bpp ({100 * (bpp / ref_bpp - 1):+.4f}%), "
              f"{p:.4f} dB ({p - ref_psnr:+.4f}), max |y - y_untiled| {float((y - y_ref).abs().max()):.2e}, "
              f"{flips} latents round differently, {diff} of {out.size} subpixels differ "
              f"(encode {te:.1f} s, decode {td:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
