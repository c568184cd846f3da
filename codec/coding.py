"""The coding pipeline: pixels -> (z string, y string, guard list) -> pixels.

This is the model's ``compress``/``decompress`` made safe and bounded:

* The transforms g_a and g_s (float32) run over overlapping tiles above one
  tile's size (:mod:`aecodec.tiling`); smaller images take one piece.
* Entropy parameters: ``z_hat`` (integers plus the stored medians) goes
  through a float64 copy of the hyper-synthesis h_s on the CPU; the scale
  index of a latent is the smallest table scale >= its predicted scale (the
  rule of ``model._entropy_parameters``), means are rounded to float32.
* Desync guard: float64 results may differ in the last bits between machines,
  BLAS libraries or tilings.  An index can only flip if the predicted scale
  lies within that error of a table entry.  The encoder lists every latent
  whose scale is within ``2*GUARD`` (relative) of a table entry together with
  the index it used (chunk ``YIDX``, usually empty and then absent); the
  decoder uses the listed index there, and refuses the file if it finds a
  latent within ``GUARD`` of a table entry that the encoder did not list
  (which would mean the two computations differ by more than ``GUARD``).  So
  as long as encoder and decoder agree on every scale to within a relative
  ``GUARD`` = 1e-9 (float64 agrees to ~1e-15), they pick the same CDF for every
  symbol: no silent desync.
* rANS decoding runs in a worker process and every string must re-encode to
  itself (:mod:`aecodec.rans`).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from . import rans, tiling
from .format import FormatError

GUARD = 1e-9  # relative tolerance of the desync guard (see module docstring)
GS_UNIT = 16  # pixels per latent position
HS_UNIT = 4  # latent positions per hyper-latent position


@dataclass
class Encoded:
    z_string: bytes
    y_string: bytes
    guard: bytes  # YIDX payload, b"" if no latent is near a table entry
    y_shape: Tuple[int, int]
    z_shape: Tuple[int, int]
    tiles: int = 1


def _torch():
    import torch

    return torch


def _exact(f):
    """Run ``f`` with the caller's CPU autocast (e.g. bfloat16) switched off: the bytes and
    pixels must not depend on a context the caller happened to be in."""
    @functools.wraps(f)
    def run(*args, **kwargs):
        with _torch().autocast("cpu", enabled=False):
            return f(*args, **kwargs)
    return run


def _cache(model) -> dict:
    c = getattr(model, "_coding_cache", None)
    if c is None:
        c = model.__dict__.setdefault("_aecodec_cache", {})
    return c


def _h_s64(model):
    import copy

    c = _cache(model)
    if c.get("h_s64") is None:  # the same float64 copy model._entropy_parameters uses
        c["h_s64"] = copy.deepcopy(model.h_s).to(_torch().float64).eval()
    return c["h_s64"]


def _g_s64(model):
    import copy

    c = _cache(model)
    if c.get("g_s64") is None:
        c["g_s64"] = copy.deepcopy(model.g_s).to(_torch().float64).eval()
    return c["g_s64"]


def _gains(model, level: int, frac: int = 0):
    """(gain, inverse gain), 1 x M x 1 x 1 float32, of level index ``level`` (0-based) or, with
    ``frac`` hundredths (1..99), between it and the next level: the log-gains interpolated
    linearly in float32 as ``(1 - t) * a + t * b`` with ``t = float32(frac) / 100``, then
    exponentiated (docs/FORMAT.md, *Decoding*, step 6)."""
    torch = _torch()
    if not frac:
        return model._gains(torch.tensor([level], dtype=torch.long))
    if not (1 <= frac <= 99 and 0 <= level < model.levels - 1):
        raise ValueError(f"no quality {level + 1}.{frac:02d}: the model has levels 1..{model.levels}")
    t = torch.tensor(frac, dtype=torch.float32) / torch.tensor(100, dtype=torch.float32)
    out = []
    for logs in (model.log_gain, model.log_inv_gain):
        a, b = logs.detach()[level], logs.detach()[level + 1]
        out.append(torch.exp((1 - t) * a + t * b)[None, :, None, None])
    return out[0], out[1]


def _boundaries(model):
    """(table[:-1] float64, lower bound of the scales float64): the index rule's constants."""
    torch = _torch()
    gc = model.gaussian_conditional
    table = gc.scale_table.to(torch.float64)
    bound = float(gc.lower_bound_scale.bound)
    return table[:-1].contiguous(), bound


# -- entropy parameters ------------------------------------------------------------------------------

@dataclass
class Params:
    indexes: np.ndarray  # uint8 (or uint16), M x Hy x Wy
    means: "object"  # torch float32, 1 x M x Hy x Wy
    near_pos: np.ndarray  # int64 flat positions (C-order over M x Hy x Wy) within the tolerance
    near_dist: np.ndarray  # float64 relative distance of those to the nearest table entry
    finite: bool = True  # h_s gave finite scales and means (float64)


@_exact
def entropy_parameters(model, z_hat, tol: float, tile: int = tiling.TILE) -> Params:
    """Scale indexes and means from z_hat (1 x N x Hz x Wz float32), in float64, tile by tile.

    Also returns the latents whose predicted scale is within relative ``tol`` of
    a table entry (the only ones whose index could differ between machines).
    """
    torch = _torch()
    h_s64 = _h_s64(model)
    b, bound = _boundaries(model)
    Hz, Wz = z_hat.shape[-2:]
    M = model.M
    Hy, Wy = Hz * HS_UNIT, Wz * HS_UNIT
    idx_dtype = np.uint8 if b.numel() + 1 <= 256 else np.uint16
    indexes = np.empty((M, Hy, Wy), idx_dtype)
    means = torch.empty((1, M, Hy, Wy), dtype=torch.float32)
    near_pos: List[np.ndarray] = []
    near_dist: List[np.ndarray] = []
    finite = [True]  # scales and means alike (a hostile z could overflow h_s)
    z64 = z_hat.to(torch.float64)

    def read(r0, r1, c0, c1):
        return z64[:, :, r0:r1, c0:c1]

    def write(r0, r1, c0, c1, block):
        if finite[0] and not bool(torch.isfinite(block).all()):
            finite[0] = False
        scales, mu = block.chunk(2, 1)
        scales = scales.contiguous()
        idx = torch.searchsorted(b, scales.clamp_min(bound), right=False)
        indexes[:, r0:r1, c0:c1] = idx[0].numpy().astype(idx_dtype)
        means[:, :, r0:r1, c0:c1] = mu.to(torch.float32)
        # relative distance of the raw scale to the nearest table entry
        k = torch.searchsorted(b, scales, right=False)
        hi = b[k.clamp_max(b.numel() - 1)]
        lo = b[(k - 1).clamp_min(0)]
        dist = torch.minimum((scales - lo).abs() / lo, (scales - hi).abs() / hi)[0]
        hit = (dist <= tol).nonzero(as_tuple=False)
        if hit.numel():
            ch, yy, xx = hit[:, 0], hit[:, 1] + r0, hit[:, 2] + c0
            near_pos.append(((ch * Hy + yy) * Wy + xx).numpy().astype(np.int64))
            near_dist.append(dist[hit[:, 0], hit[:, 1], hit[:, 2]].numpy())

    m = tiling.cached_margin(model, "h_s", 1, HS_UNIT)
    with torch.no_grad():
        tiling.run(h_s64, read, write, (Hz, Wz), 1, HS_UNIT, m, tile=max(1, tile // HS_UNIT),
                   what="entropy parameters")
    if near_pos:
        pos, dist = np.concatenate(near_pos), np.concatenate(near_dist)
        order = np.argsort(pos, kind="stable")
        pos, dist = pos[order], dist[order]
    else:
        pos, dist = np.zeros(0, np.int64), np.zeros(0, np.float64)
    return Params(indexes, means, pos, dist, finite[0])


_GUARD_ENTRY = struct.Struct(">IB")


def pack_guard(pos: np.ndarray, indexes: np.ndarray) -> bytes:
    if pos.size == 0:
        return b""
    flat = indexes.reshape(-1)
    out = bytearray(struct.pack(">I", pos.size))
    for p in pos.tolist():
        out += _GUARD_ENTRY.pack(p, int(flat[p]))
    return bytes(out)


def unpack_guard(blob: bytes, n_latents: int, n_tables: int) -> Tuple[np.ndarray, np.ndarray]:
    if not blob:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(blob) < 4:
        raise FormatError("corrupt YIDX chunk: too short")
    (count,) = struct.unpack(">I", blob[:4])
    if count == 0 or len(blob) != 4 + count * _GUARD_ENTRY.size or count > n_latents:
        raise FormatError("corrupt YIDX chunk: wrong length")
    arr = np.frombuffer(blob, dtype=np.dtype([("p", ">u4"), ("i", "u1")]), offset=4, count=count)
    pos, idx = arr["p"].astype(np.int64), arr["i"].astype(np.int64)
    if (pos >= n_latents).any() or (idx >= n_tables).any() or (np.diff(pos) <= 0).any():
        raise FormatError("corrupt YIDX chunk: bad entries")
    return pos, idx


# -- encoder ------------------------------------------------------------------------------------------

@_exact
def analysis(model, rgb_padded: np.ndarray, gain, tile: int = tiling.TILE):
    """y = g_a(x) * gain, tile by tile; rgb_padded is H x W x 3 uint8 with H, W multiples of 64."""
    torch = _torch()
    H, W = rgb_padded.shape[:2]
    Hy, Wy = H // GS_UNIT, W // GS_UNIT
    y = torch.empty((1, model.M, Hy, Wy), dtype=torch.float32)

    def read(r0, r1, c0, c1):
        crop = np.array(rgb_padded[r0:r1, c0:c1])  # a writable copy
        return torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255.0)

    def write(r0, r1, c0, c1, block):
        y[:, :, r0:r1, c0:c1] = block

    m = tiling.cached_margin(model, "g_a", GS_UNIT, 1)
    with torch.no_grad():
        n = tiling.run(model.g_a, read, write, (Hy, Wy), GS_UNIT, 1, m, tile=tile, what="analysis")
        y.mul_(gain)
    return y, n


@_exact
def encode(model, rgb_padded: np.ndarray, level: int, tile: int = tiling.TILE, analysed=None,
           frac: int = 0) -> Encoded:
    """Entropy-code one padded image (H x W x 3 uint8, multiples of 64) at level index ``level``
    (plus ``frac`` hundredths toward the next level).

    ``analysed``: ``(g_a(x), tiles)`` from ``analysis(model, rgb_padded, 1.0)``, to code one
    image at several levels with one analysis (the level's gain multiplies it exactly as here).
    """
    torch = _torch()
    if not 0 <= level < model.levels:
        raise ValueError(f"level index {level} out of range 0..{model.levels - 1}")
    g, _ = _gains(model, level, frac)
    if analysed is None:
        y, n_tiles = analysis(model, rgb_padded, g, tile)
    else:
        y, n_tiles = analysed[0] * g, analysed[1]
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    with torch.no_grad():
        z = model.h_a(y)
        medians = eb._get_medians().detach().reshape(1, -1, 1, 1)
        z_sym = torch.round(z - medians).to(torch.int32)
        del z
        C, Hz, Wz = z_sym.shape[1:]
        z_idx = np.repeat(np.arange(C, dtype=np.uint16), Hz * Wz)
        z_string = rans.encode(z_sym.numpy().reshape(-1), z_idx, rans.Tables.of(eb))
        z_hat = z_sym.to(torch.float32) + medians
        del z_sym
        p = entropy_parameters(model, z_hat, 2 * GUARD, tile)
        y.sub_(p.means).round_()  # y symbols, in place
        y_sym = y.to(torch.int32).numpy().reshape(-1)
        del y
        y_string = rans.encode(y_sym, p.indexes.reshape(-1), rans.Tables.of(gc))
    return Encoded(z_string, y_string, pack_guard(p.near_pos, p.indexes),
                   (Hz * HS_UNIT, Wz * HS_UNIT), (Hz, Wz), n_tiles)


# -- decoder ------------------------------------------------------------------------------------------

@_exact
def decode_latents(model, z_string: bytes, y_string: bytes, guard: bytes, z_shape: Tuple[int, int],
                   tile: int = tiling.TILE):
    """(y_hat float32 1 x M x Hy x Wy, Params) from the strings; FormatError on anything invalid."""
    torch = _torch()
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    Hz, Wz = z_shape
    C = eb._quantized_cdf.shape[0]
    z_idx = np.repeat(np.arange(C, dtype=np.uint16), Hz * Wz)
    z_sym = rans.decode(z_string, z_idx, rans.Tables.of(eb), what="ZSTR (hyper-latents)")
    medians = eb._get_medians().detach().reshape(1, -1, 1, 1)
    z_hat = torch.from_numpy(z_sym.astype(np.float32).reshape(1, C, Hz, Wz)) + medians
    del z_sym
    p = entropy_parameters(model, z_hat, GUARD, tile)
    if not p.finite or not bool(torch.isfinite(p.means).all()):  # (the float32 means too: they may overflow)
        raise FormatError("corrupt payload: entropy parameters are not finite")
    tables = rans.Tables.of(gc)
    n_latents = p.indexes.size
    g_pos, g_idx = unpack_guard(guard, n_latents, tables.n)
    flat = p.indexes.reshape(-1)
    if p.near_pos.size:
        missing = np.setdiff1d(p.near_pos, g_pos, assume_unique=True)
        if missing.size:
            raise FormatError(
                f"{missing.size} latent(s) have a predicted scale within {GUARD:g} of a table entry and "
                "the file does not say which table the encoder used: this decoder's entropy parameters "
                "differ from the encoder's (different weights or arithmetic), or the file is corrupt")
    if g_pos.size:
        if (np.abs(flat[g_pos].astype(np.int64) - g_idx) > 1).any():
            raise FormatError("corrupt YIDX chunk: listed indexes far from the predicted ones")
        flat[g_pos] = g_idx.astype(flat.dtype)
    y_sym = rans.decode(y_string, flat, tables, what="YSTR (latents)")
    y_hat = torch.from_numpy(y_sym.astype(np.float32).reshape(p.means.shape))
    del y_sym
    y_hat.add_(p.means)
    return y_hat, p


@_exact
def synthesis(model, y_scaled, height: int, width: int, precision: str = "float32",
              tile: int = tiling.TILE) -> np.ndarray:
    """x = g_s(y_scaled) clamped, rounded to 8 bits, cropped to height x width (H x W x 3 uint8)."""
    torch = _torch()
    if precision == "float64":
        g_s, dtype = _g_s64(model), torch.float64
    elif precision == "float32":
        g_s, dtype = model.g_s, torch.float32
    else:
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    Hy, Wy = y_scaled.shape[-2:]
    out = np.empty((height, width, 3), np.uint8)
    ys = y_scaled.to(dtype)

    def read(r0, r1, c0, c1):
        return ys[:, :, r0:r1, c0:c1]

    def write(r0, r1, c0, c1, block):
        if r0 >= height or c0 >= width:
            return
        r1, c1 = min(r1, height), min(c1, width)
        block = block[0, :, :r1 - r0, :c1 - c0]
        if not bool(torch.isfinite(block).all()):
            raise FormatError("corrupt payload: the decoded image is not finite")
        px = block.clamp(0, 1).mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        out[r0:r1, c0:c1] = px.permute(1, 2, 0).numpy()

    m = tiling.cached_margin(model, "g_s", 1, GS_UNIT)
    with torch.no_grad():
        tiling.run(g_s, read, write, (Hy, Wy), 1, GS_UNIT, m, tile=tile, what="synthesis")
    return out


def check_level(model, level: int, frac: int = 0) -> None:
    """FormatError unless level index ``level`` (+ ``frac`` hundredths) is one of the model's."""
    top = model.levels - 1 if frac else model.levels
    if not 0 <= level < top:
        from .format import join_quality

        raise FormatError(f"corrupt header: quality {join_quality(level + 1, frac)} not in 1..{model.levels}")


def decode(model, z_string: bytes, y_string: bytes, guard: bytes, z_shape, level: int, height: int,
           width: int, precision: str = "float32", tile: int = tiling.TILE, frac: int = 0) -> np.ndarray:
    """Decode the strings to an H x W x 3 uint8 image (level index ``level`` + ``frac`` hundredths)."""
    check_level(model, level, frac)
    y_hat, _ = decode_latents(model, z_string, y_string, guard, z_shape, tile)
    _, ig = _gains(model, level, frac)
    y_hat.mul_(ig)
    return synthesis(model, y_hat, height, width, precision, tile)
