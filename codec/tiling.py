"""Running the convolutional transforms over overlapping tiles (bounded memory).

A transform (g_a, g_s, h_s) is applied to one tile of the image at a time.  Each
tile is extended by a margin of at least the transform's receptive-field
radius, the transform runs on the extended crop, and only the tile's own part
of the result is kept.  Every kept output depends only on inputs inside the
crop, and crops start on the transform's stride grid, so the stitched result
is the untiled result: the same sums of the same products, up to the order in
which the convolution kernels add them (float rounding).  There is still one
latent tensor and one bitstream per image, so tiling costs no rate.

Tiles are laid out on the latent grid from the image size alone (never from the
thread count or the machine), so tiled coding is as deterministic as untiled.
An image that fits in one tile is computed in one piece, exactly as without
tiling.

The margin is derived from the layer structure (kernel sizes, strides,
paddings), see :func:`margin`; a transform with a layer this module does not
know is not tiled.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator, Optional, Tuple

TILE = 64  # tile side in latent (y) positions = 1024 pixels

_POINTWISE = ("GDN", "LeakyReLU", "ReLU", "Identity", "Sigmoid", "Tanh", "GELU", "SiLU", "PReLU")


class NotTileable(Exception):
    pass


def _layers(module):
    import torch.nn as nn

    if isinstance(module, nn.Sequential):
        for m in module:
            yield from _layers(m)
    else:
        yield module


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _backward_interval(layer, lo: int, hi: int, dim: int) -> Tuple[int, int]:
    """Input index interval that output indexes [lo, hi] of ``layer`` depend on (one spatial dim)."""
    import torch.nn as nn

    if isinstance(layer, nn.Conv2d):
        k, s, p, d = (_pair(getattr(layer, a))[dim] for a in ("kernel_size", "stride", "padding", "dilation"))
        if isinstance(layer.padding, str):
            raise NotTileable("string padding")
        return lo * s - p, hi * s - p + d * (k - 1)
    if isinstance(layer, nn.ConvTranspose2d):
        k, s, p, d = (_pair(getattr(layer, a))[dim] for a in ("kernel_size", "stride", "padding", "dilation"))
        # out[o] = sum over i, j with o = i*s - p + j*d, 0 <= j < k
        return math.ceil((lo + p - d * (k - 1)) / s), math.floor((hi + p) / s)
    if type(layer).__name__ in _POINTWISE or any(c.__name__ in _POINTWISE for c in type(layer).__mro__):
        return lo, hi
    raise NotTileable(f"unknown layer {type(layer).__name__}")


def _scale(module) -> Tuple[int, int]:
    """(down, up): total stride of the strided convs and of the transposed convs."""
    import torch.nn as nn

    down = up = 1
    for layer in _layers(module):
        if isinstance(layer, nn.Conv2d):
            down *= _pair(layer.stride)[0]
        elif isinstance(layer, nn.ConvTranspose2d):
            up *= _pair(layer.stride)[0]
    return down, up


def margin(module, unit_in: int, unit_out: int) -> int:
    """Margin in grid units so that every output of a tile is exact.

    One grid unit is ``unit_in`` input samples and ``unit_out`` output samples
    (g_a: 16 and 1, g_s: 1 and 16, h_s: 1 and 4).  The output block of grid
    cell ``c`` is traced back through the layers to the input interval it
    depends on; the margin is how far that interval reaches outside the cell,
    rounded up to whole cells.
    """
    layers = list(_layers(module))
    c = 8  # any cell away from the border; intervals are translation-invariant
    worst = 0
    for dim in (0, 1):
        lo, hi = c * unit_out, (c + 1) * unit_out - 1
        for layer in reversed(layers):
            lo, hi = _backward_interval(layer, lo, hi, dim)
        lead = c * unit_in - lo
        trail = hi - ((c + 1) * unit_in - 1)
        worst = max(worst, lead, trail)
    return max(0, math.ceil(worst / unit_in))


def cached_margin(model, name: str, unit_in: int, unit_out: int) -> Optional[int]:
    """margin() of ``model.<name>``, or None if it cannot be tiled; cached on the model."""
    cache = model.__dict__.setdefault("_aecodec_margins", {})
    if name not in cache:
        module = getattr(model, name)
        try:
            down, up = _scale(module)
            if down * unit_out != up * unit_in:
                raise NotTileable("stride does not match the grid")
            cache[name] = margin(module, unit_in, unit_out)
        except NotTileable:
            cache[name] = None
    return cache[name]


def spans(n: int, tile: int, m: int) -> Iterator[Tuple[int, int, int, int]]:
    """(core_start, core_end, crop_start, crop_end) along one axis of n grid cells."""
    if n <= tile:
        yield 0, n, 0, n
        return
    count = -(-n // tile)
    step = -(-n // count)  # equal tiles, the last one possibly shorter
    for c0 in range(0, n, step):
        c1 = min(n, c0 + step)
        yield c0, c1, max(0, c0 - m), min(n, c1 + m)


_on_tile: contextvars.ContextVar = contextvars.ContextVar("aecodec_on_tile", default=None)


@contextlib.contextmanager
def report_tiles(callback: Callable[[str, int, int], None]):
    """Within this block, every tiled transform of more than one tile calls
    ``callback(what, done, total)`` after each tile (a progress bar for large images)."""
    token = _on_tile.set(callback)
    try:
        yield
    finally:
        _on_tile.reset(token)


def run(f: Callable, read: Callable, write: Callable, grid_hw: Tuple[int, int], unit_in: int, unit_out: int,
        m: Optional[int], tile: int = TILE, what: str = "") -> int:
    """Apply ``f`` tile by tile.  Returns the number of tiles.

    ``read(r0, r1, c0, c1)`` returns the input crop (input-sample coordinates),
    ``write(r0, r1, c0, c1, block)`` stores an output block (output-sample
    coordinates).  With ``m`` None (not tileable) the whole grid is one tile.
    ``what`` names the transform for :func:`report_tiles`.
    """
    H, W = grid_hw
    if m is None:
        tile = max(H, W)
        m = 0
    rows, cols = list(spans(H, tile, m)), list(spans(W, tile, m))
    total = len(rows) * len(cols)
    report = _on_tile.get() if total > 1 else None
    n = 0
    for r0, r1, a0, a1 in rows:
        for c0, c1, b0, b1 in cols:
            out = f(read(a0 * unit_in, a1 * unit_in, b0 * unit_in, b1 * unit_in))
            block = out[..., (r0 - a0) * unit_out:(r1 - a0) * unit_out, (c0 - b0) * unit_out:(c1 - b0) * unit_out]
            write(r0 * unit_out, r1 * unit_out, c0 * unit_out, c1 * unit_out, block)
            n += 1
            if report is not None:
                report(what, n, total)
    return n
