#!/usr/bin/env python
"""Make a large test photo: a mosaic of the Kodak images (landscape, 768x512
each, portrait ones rotated), cycled over the canvas and cut to WxH.

    python tools/make_big_image.py 6000 4000 big.png [--kodak DIR]

The 24-megapixel memory figure in docs/ROBUSTNESS.md was measured on
``6000 4000`` (8 x 8 Kodak tiles, cut): real photographic content, not a
real 24 MP photo.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def mosaic(width: int, height: int, kodak: Path) -> np.ndarray:
    files = sorted(Path(kodak).glob("*.png"))
    if not files:
        raise SystemExit(f"no PNG files in {kodak}")
    canvas = np.zeros((height, width, 3), np.uint8)
    i = 0
    for y in range(0, height, 512):
        for x in range(0, width, 768):
            im = Image.open(files[i % len(files)]).convert("RGB")
            if im.height > im.width:
                im = im.rotate(90, expand=True)
            a = np.asarray(im)[:512, :768]
            h, w = min(512, height - y), min(768, width - x)
            canvas[y:y + h, x:x + w] = a[:h, :w]
            i += 1
    return canvas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("width", type=int, help="pixels")
    ap.add_argument("height", type=int, help="pixels")
    ap.add_argument("out", type=Path, help="the PNG to write")
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--kodak", type=Path, default=here.parent / "shared" / "data" / "kodak",
                    help="folder of the photos the mosaic is tiled from (default: %(default)s)")
    args = ap.parse_args(argv)
    Image.fromarray(mosaic(args.width, args.height, args.kodak)).save(args.out, compress_level=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
