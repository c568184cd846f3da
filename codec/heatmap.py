"""Where the bits go: a map of the bits an .aec file spends on each region.

The map comes from the file itself, not from a re-encode: the latents are
decoded from the file's strings and the entropy model gives the likelihood of
each decoded symbol under the very distribution the coder used (the same
computation as ``model.estimate_bits``, on the coded latents: the bits of each
symbol under the stored CDF tables, escapes included); summed over the channels it
gives bits per latent position (one position of y covers 16x16 pixels, one of z
64x64), spread evenly over the pixels it covers (no smoothing), in bits per
pixel.  The model's total is within a few bytes of the file's strings (the
range coder's own overhead is the difference); the header is not part of the
map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np


def bits_map(data: bytes) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """(decoded RGB HxWx3 uint8, bits per pixel HxW float64, totals) of .aec bytes.

    Decodes through the same crash-safe path as ``aecodec.decompress``
    (:mod:`aecodec.coding`), then asks the entropy model for the likelihood of
    each decoded symbol under the distribution the coder used.
    """
    import torch

    from . import coding, rans
    from .api import MAX_PIXELS, _check_container
    from .format import unpack
    from .model import table_bits
    from .weights import load_model

    c = unpack(bytes(data))
    _check_container(c, MAX_PIXELS)
    h = c.header
    model = load_model(h.model_id)
    level, frac = c.quality_parts
    coding.check_level(model, level - 1, frac)
    y_str, z_str = c.chunks[b"YSTR"], c.chunks[b"ZSTR"]
    y_hat, params = coding.decode_latents(model, z_str, y_str, c.chunks.get(b"YIDX", b""), tuple(h.z_shape))
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    Hz, Wz = h.z_shape
    C = eb._quantized_cdf.shape[0]
    z_sym = rans.decode(z_str, np.repeat(np.arange(C, dtype=np.uint16), Hz * Wz), rans.Tables.of(eb),
                        what="ZSTR (hyper-latents)")
    with torch.no_grad():
        z_idx = torch.arange(C).view(1, C, 1, 1).expand(1, C, Hz, Wz)
        z_sym_t = torch.from_numpy(z_sym.astype(np.int64).reshape(1, C, Hz, Wz))
        y_sym = torch.round(y_hat - params.means)
        y_idx = torch.from_numpy(params.indexes.astype(np.int64))[None]
        y_bits = table_bits(gc, y_sym, y_idx).sum(1)[0].numpy()  # H/16 x W/16
        z_bits = table_bits(eb, z_sym_t, z_idx).sum(1)[0].numpy()  # H/64 x W/64
    bpp = np.kron(y_bits, np.ones((16, 16))) / 256.0 + np.kron(z_bits, np.ones((64, 64))) / 4096.0
    bpp = bpp[:h.height, :h.width]
    _, ig = coding._gains(model, level - 1, frac)
    rgb = coding.synthesis(model, y_hat * ig, h.height, h.width)
    totals = {
        "width": h.width, "height": h.height, "quality": c.quality, "model": h.model_id,
        "file_bytes": len(data), "file_bpp": 8.0 * len(data) / (h.width * h.height),
        "y_string_bytes": len(y_str), "z_string_bytes": len(z_str),
        "model_y_bits": float(y_bits.sum()), "model_z_bits": float(z_bits.sum()),
    }
    return rgb, bpp, totals


def figure_panel(width: int, height: int, long_side: float = 6.0, short_min: float = 2.5):
    """(width, height) in inches of one panel: the image's aspect ratio, the long side
    ``long_side``, and no side under ``short_min`` (a 2x3000 image gets a 2.5 x 6 inch
    panel, not a 6 x 9000 inch one)."""
    if height <= width:
        return long_side, max(short_min, long_side * height / width)
    return max(short_min, long_side * width / height), long_side


def draw_heatmap(aec_bytes: bytes, out_png_path) -> Dict:
    """Draw the decoded image and, beside it, the bits spent per region (PNG). Returns the totals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb, bpp, t = bits_map(aec_bytes)
    h, w = bpp.shape
    panel_w, panel_h = figure_panel(w, h)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(panel_w, 3.0) + 1.2, panel_h + 1.0), dpi=100,
                             gridspec_kw={"width_ratios": [1, 1.08]})
    aspect = "auto" if max(w, h) > 8 * min(w, h) else "equal"  # a sliver of an image fills its panel
    axes[0].imshow(rgb, interpolation="nearest", aspect=aspect)
    axes[0].set_title("decoded image", fontsize=10)
    im = axes[1].imshow(bpp, cmap="magma", interpolation="nearest", vmin=0, aspect=aspect)
    axes[1].set_title("bits per pixel spent on each region", fontsize=10)
    cb = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
    cb.set_label("bits per pixel")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    est = (t["model_y_bits"] + t["model_z_bits"]) / 8.0
    fig.suptitle(f"{w}x{h}, quality {t['quality']}: {t['file_bytes']} bytes = {t['file_bpp']:.3f} bpp "
                 f"(y {t['y_string_bytes']} B, z {t['z_string_bytes']} B; entropy model: {est:.0f} B)",
                 fontsize=10)
    fig.tight_layout()
    out = out_png_path if hasattr(out_png_path, "write") else Path(out_png_path)
    fig.savefig(out, format="png")
    plt.close(fig)
    return t
