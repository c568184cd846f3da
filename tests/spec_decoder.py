"""An independent .aec decoder written from docs/FORMAT.md alone (and the weight tensors it names).

It imports nothing of aecodec's decoder: its own container parser, its own rANS decoder (the
spec's "Decoding one symbol"), its own h_s / g_s / inverse GDN from the spec's layer table.
compressai is used only to re-encode the decoded symbols (the spec's validity rule; imported
through aecodec._deps, the torchvision guard of ../shared/GUIDE.md), and the caller passes the
weights folder.  tests/test_spec_conformance.py checks that it
decodes aecodec's files exactly as aecodec does: if the two disagree, FORMAT.md or the decoder
is wrong.  (First written in session 12 by a reviewer who was not shown the decoder's source.)
"""

from __future__ import annotations

import bisect
import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MAGIC = b"\x8aAEC"
KNOWN = {b"ZSTR", b"YSTR", b"ALPH", b"YIDX", b"QFRC", b"iCCP"}
RANS_L = 1 << 31
ICC_LIMIT = 16 << 20


class SpecError(ValueError):
    pass


def parse(data: bytes, max_pixels: int = 2 ** 27) -> dict:
    if data[:4] != MAGIC:
        raise SpecError("bad magic")
    if len(data) < 7 or data[4] != 1 or data[5] != 0:
        raise SpecError("bad version or flags")
    n = data[6]
    if not 1 <= n <= 64 or len(data) < 26 + n + 4:
        raise SpecError("bad or truncated header")
    model_id = data[7:7 + n].decode("ascii")
    quality, mode = data[7 + n], data[8 + n]
    width, height = struct.unpack(">II", data[9 + n:17 + n])
    y_h, y_w, z_h, z_w = struct.unpack(">HHHH", data[17 + n:25 + n])
    n_chunks, pos = data[25 + n], 26 + n
    if n_chunks > 32:
        raise SpecError("too many chunks")
    chunks = {}
    for _ in range(n_chunks):
        if pos + 8 > len(data) - 4:
            raise SpecError("truncated chunk header")
        tag, (length,) = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])
        pos += 8
        if pos + length > len(data) - 4:
            raise SpecError("truncated chunk")
        body, pos = data[pos:pos + length], pos + length
        if tag not in KNOWN:
            if 0x61 <= tag[0] <= 0x7A:
                continue  # unknown ancillary: skipped
            raise SpecError(f"unknown critical chunk {tag!r}")
        if tag in chunks:
            raise SpecError(f"duplicate {tag!r}")
        chunks[tag] = body
    if pos != len(data) - 4:
        raise SpecError("trailing bytes")
    if zlib.crc32(data[:-4]) != struct.unpack(">I", data[-4:])[0]:
        raise SpecError("CRC mismatch")
    if b"ZSTR" not in chunks or b"YSTR" not in chunks or mode not in (1, 2, 3, 4):
        raise SpecError("missing strings or bad mode")
    if not (1 <= width <= 1048512 and 1 <= height <= 1048512):
        raise SpecError("size out of range")
    if (y_h, y_w) != (-(-height // 64) * 4, -(-width // 64) * 4) or (z_h, z_w) != (y_h // 4, y_w // 4):
        raise SpecError("latent shapes disagree with the size")
    if width * height > max_pixels:
        raise SpecError("over the pixel limit")
    alpha = None
    if (mode in (2, 4)) != (b"ALPH" in chunks):
        raise SpecError("ALPH in LA/RGBA only, and required there")
    if mode in (2, 4):
        d = zlib.decompressobj()
        try:
            a = d.decompress(chunks[b"ALPH"], width * height)
        except zlib.error as e:
            raise SpecError(f"corrupt alpha ({e})") from None
        if len(a) != width * height or not d.eof or d.unconsumed_tail or d.unused_data:
            raise SpecError("alpha plane of the wrong size")
        alpha = np.frombuffer(a, np.uint8).reshape(height, width)
    icc = None
    if chunks.get(b"iCCP"):
        d = zlib.decompressobj()
        try:
            icc = d.decompress(chunks[b"iCCP"], ICC_LIMIT)
            if not d.eof or d.unconsumed_tail or d.unused_data or not icc:
                icc = None
        except zlib.error:
            icc = None
    yidx = {}
    blob = chunks.get(b"YIDX", b"")
    if blob:
        (count,) = struct.unpack(">I", blob[:4])
        if count < 1 or len(blob) != 4 + 5 * count:
            raise SpecError("YIDX of the wrong length")
        last = -1
        for i in range(count):
            (p,), s = struct.unpack(">I", blob[4 + 5 * i:8 + 5 * i]), blob[8 + 5 * i]
            if p <= last or s >= 64:
                raise SpecError("YIDX entries out of order or range")
            yidx[p], last = s, p
    frac = 0
    if b"QFRC" in chunks:
        if len(chunks[b"QFRC"]) != 1 or not 1 <= chunks[b"QFRC"][0] <= 99:
            raise SpecError("QFRC is not one byte of 1..99")
        frac = chunks[b"QFRC"][0]
    return dict(model_id=model_id, quality=quality, frac=frac, mode=mode, width=width, height=height,
                y_shape=(y_h, y_w), z_shape=(z_h, z_w), chunks=chunks, alpha=alpha, icc=icc, yidx=yidx)


def load_weights(weights_dir: Path, model_id: str) -> dict:
    from safetensors.torch import load

    manifest = json.loads((weights_dir / "manifest.json").read_text())
    entry = manifest["models"].get(model_id)
    if entry is None:
        raise SpecError(f"unknown model {model_id}")
    raw = (weights_dir / entry["file"]).read_bytes()
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise SpecError("weights sha256 mismatch")
    return load(raw)


class RansDecoder:
    """The spec's "Decoding one symbol", 16-bit probabilities, 4-bit raw fields."""

    def __init__(self, s: bytes):
        if len(s) % 4 or len(s) < 8:
            raise SpecError("a string is whole 32-bit words, at least two")
        self.w = struct.unpack(f"<{len(s) // 4}I", s)
        self.x, self.p = self.w[0] | (self.w[1] << 32), 2

    def _renorm(self):
        if self.x < RANS_L:
            if self.p >= len(self.w):
                raise SpecError("read past the end of a string")
            self.x, self.p = (self.x << 32) | self.w[self.p], self.p + 1

    def _raw(self) -> int:
        v, self.x = self.x & 15, self.x >> 4
        self._renorm()
        return v

    def decode(self, indexes, cdfs, lengths, offsets):
        out = []
        for i in indexes:
            cdf, mx = cdfs[i], lengths[i] - 2
            f = self.x & 0xFFFF
            v = bisect.bisect_right(cdf, f, 0, lengths[i]) - 1
            if not 0 <= v <= mx:
                raise SpecError("bad CDF")
            self.x = (cdf[v + 1] - cdf[v]) * (self.x >> 16) + f - cdf[v]
            self._renorm()
            if v == mx:  # the escape: n as a run of 15s, then n digits, least significant first
                field = self._raw()
                n = field
                while field == 15:
                    field = self._raw()
                    n += field
                    if n > 64:
                        raise SpecError("escape too long")
                raw = sum(self._raw() << (4 * j) for j in range(n))
                v = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + mx
            out.append(v + offsets[i])
        if not (self.p == len(self.w) and self.x == RANS_L):
            raise SpecError("a string with words left over, or a final state other than 2^31")
        return out


def _strings(data: bytes, indexes, tables):
    cdfs, lengths, offsets = tables
    sym = RansDecoder(data).decode(indexes, cdfs, lengths, offsets)
    if any(abs(s) >= 1 << 24 for s in sym):
        raise SpecError("a symbol at or over 2^24")
    from aecodec._deps import import_compressai  # the torchvision guard of ../shared/GUIDE.md

    import_compressai()
    from compressai.ans import BufferedRansEncoder

    enc = BufferedRansEncoder()
    enc.encode_with_indexes(sym, list(indexes), cdfs, lengths, offsets)
    if enc.flush() != data:
        raise SpecError("a string that is not what the encoder writes")
    return sym


def _tables(w, prefix):
    lengths = w[f"{prefix}._cdf_length"].tolist()
    cdfs = [row[:n].tolist() for row, n in zip(w[f"{prefix}._quantized_cdf"], lengths)]
    return cdfs, lengths, w[f"{prefix}._offset"].tolist()


def _conv(x, w, name, transposed):
    k, b = w[f"{name}.weight"].to(x.dtype), w[f"{name}.bias"].to(x.dtype)
    if transposed:
        return F.conv_transpose2d(x, k, b, stride=2, padding=k.shape[-1] // 2, output_padding=1)
    return F.conv2d(x, k, b, stride=1, padding=k.shape[-1] // 2)


def _effective(w, name, dtype):
    v = w[name].to(dtype)
    return torch.maximum(v, w[f"{name}_reparam.lower_bound.bound"].to(dtype)) ** 2 - w[f"{name}_reparam.pedestal"].to(dtype)


def _igdn(x, w, name):
    beta, gamma = _effective(w, f"{name}.beta", x.dtype), _effective(w, f"{name}.gamma", x.dtype)
    norm = torch.einsum("ij,bjhw->bihw", gamma, x * x) + beta[None, :, None, None]
    return x * torch.sqrt(norm)


def h_s(z, w):
    x = F.leaky_relu(_conv(z, w, "h_s.0", True), 0.01)
    x = F.leaky_relu(_conv(x, w, "h_s.2", True), 0.01)
    return _conv(x, w, "h_s.4", False)


def g_s(y, w):
    x = y
    for i in (0, 2, 4):
        x = _igdn(_conv(x, w, f"g_s.{i}", True), w, f"g_s.{i + 1}")
    return _conv(x, w, "g_s.6", True)


def inverse_gain(w, quality: int, frac: int = 0):
    """Step 6: exp(log_inv_gain[quality - 1]), or with QFRC k the interpolated log-gains, all in float32."""
    log_ig = w["log_inv_gain"][quality - 1]
    if frac:
        t = torch.tensor(float(frac), dtype=torch.float32) / torch.tensor(100.0, dtype=torch.float32)
        log_ig = (torch.tensor(1.0, dtype=torch.float32) - t) * log_ig + t * w["log_inv_gain"][quality]
    return torch.exp(log_ig)


def decode(data: bytes, weights_dir: Path) -> dict:
    """{"mode", "pixels" (H x W x 3, or H x W for grey; uint8, the float64 reference synthesis), "alpha", "icc",
    "y_symbols", "indexes"}; SpecError for anything the spec says to refuse."""
    h = parse(data)
    w = load_weights(weights_dir, h["model_id"])
    M, C = w["log_inv_gain"].shape[1], w["entropy_bottleneck._offset"].shape[0]
    if not 1 <= h["quality"] <= w["log_inv_gain"].shape[0] - (1 if h["frac"] else 0):
        raise SpecError("quality out of the model's range")
    (y_h, y_w), (z_h, z_w) = h["y_shape"], h["z_shape"]
    z_sym = _strings(h["chunks"][b"ZSTR"], np.repeat(np.arange(C), z_h * z_w).tolist(),
                     _tables(w, "entropy_bottleneck"))
    medians = w["entropy_bottleneck.quantiles"][:, 0, 1]
    z_hat = torch.tensor(z_sym, dtype=torch.float32).reshape(1, C, z_h, z_w) + medians.reshape(1, C, 1, 1)
    with torch.no_grad():
        p = h_s(z_hat.double(), w)
    if not torch.isfinite(p).all():
        raise SpecError("non-finite entropy parameters")
    raw_scales, means = p[0, :M].reshape(-1), p[:, M:].float()
    table = w["gaussian_conditional.scale_table"].double()[:63]
    bound = float(w["gaussian_conditional.lower_bound_scale.bound"])
    idx = (raw_scales.clamp(min=bound)[:, None] > table[None, :]).sum(1)
    near = ((raw_scales[:, None] - table[None, :]).abs() / table[None, :]).min(1).values <= 1e-9
    for pos, listed in h["yidx"].items():
        if pos >= idx.numel() or abs(listed - int(idx[pos])) > 1:
            raise SpecError("YIDX entry out of range or far from the computed index")
        idx[pos] = listed
    if any(int(q) not in h["yidx"] for q in near.nonzero().flatten()):
        raise SpecError("a latent near a table entry that YIDX does not list")
    y_sym = _strings(h["chunks"][b"YSTR"], idx.tolist(), _tables(w, "gaussian_conditional"))
    y_hat = torch.tensor(y_sym, dtype=torch.float32).reshape(1, M, y_h, y_w) + means
    scaled = y_hat * inverse_gain(w, h["quality"], h["frac"]).reshape(1, M, 1, 1)
    with torch.no_grad():
        x = g_s(scaled.double(), w)
    if not torch.isfinite(x).all():
        raise SpecError("non-finite pixels")
    rgb = torch.round(x.clamp(0, 1) * 255)[0, :, :h["height"], :h["width"]].permute(1, 2, 0).numpy().astype(np.uint8)
    if h["mode"] in (1, 2):  # grey: (R + G + B + 1) // 3 of the 8-bit channels
        rgb = ((rgb.astype(np.int32).sum(axis=2) + 1) // 3).astype(np.uint8)
    return {"mode": {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[h["mode"]], "pixels": rgb, "alpha": h["alpha"],
            "icc": h["icc"], "y_symbols": y_sym, "indexes": idx.tolist()}
