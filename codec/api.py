"""Public API: image -> .aec bytes -> image."""

from __future__ import annotations

import zlib
from typing import Dict, Optional

import numpy as np

from .format import Container, FormatError, Header, pack, unpack
from .image import Planes, planes_to_pil, to_planes

QUALITIES = (1, 2, 3, 4, 5, 6, 7, 8)
DEFAULT_QUALITY = 6
MULTIPLE = 64  # g_a downsamples 16x, h_a 4x more

# Largest image the decoder will allocate for (pixels); see docs/FORMAT.md.
MAX_PIXELS = 64 * 2**20 * 4  # 256 Mpx


def check_quality(quality) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ValueError(f"quality must be an integer in {QUALITIES[0]}..{QUALITIES[-1]}, got {quality!r}")
    q = int(quality)
    if q not in QUALITIES:
        raise ValueError(f"quality must be in {QUALITIES[0]}..{QUALITIES[-1]}, got {q}")
    return q


def _latent_shapes(h: int, w: int):
    ph, pw = -(-h // MULTIPLE) * MULTIPLE, -(-w // MULTIPLE) * MULTIPLE
    return (ph, pw), (ph // 16, pw // 16), (ph // 64, pw // 64)


def _to_tensor(rgb: np.ndarray):
    """HxWx3 uint8 -> 1x3xH'xW' float in [0,1], edge-padded to a multiple of 64."""
    import torch

    h, w = rgb.shape[:2]
    (ph, pw), _, _ = _latent_shapes(h, w)
    if (ph, pw) != (h, w):
        rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)


def _to_uint8(x_hat, h: int, w: int) -> np.ndarray:
    x = x_hat[0, :, :h, :w].mul(255.0).round_().clamp_(0, 255).to(dtype=__import__("torch").uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def compress_planes(planes: Planes, quality: int = DEFAULT_QUALITY, model_id: Optional[str] = None) -> bytes:
    from .weights import load_model

    q = check_quality(quality)
    model = load_model(model_id)
    if q > model.levels:
        raise ValueError(f"model {model.model_id} has {model.levels} quality levels")
    x = _to_tensor(planes.rgb)
    out = model.compress(x, q - 1)
    chunks = [(b"ZSTR", out["strings"][1][0]), (b"YSTR", out["strings"][0][0])]
    if planes.alpha is not None:
        chunks.append((b"ALPH", zlib.compress(np.ascontiguousarray(planes.alpha).tobytes(), 9)))
    header = Header(model_id=model.model_id, quality=q, mode=planes.mode, width=planes.width,
                    height=planes.height, y_shape=out["y_shape"], z_shape=out["shape"])
    return pack(header, chunks)


def compress(image, quality: int = DEFAULT_QUALITY) -> bytes:
    """Compress a PIL.Image or an HxW / HxWx3 / HxWx4 uint8 array to .aec bytes.

    Raises ValueError for a quality outside ``QUALITIES``.
    """
    check_quality(quality)
    return compress_planes(to_planes(image), quality)


def _check_container(c: Container, max_pixels: int) -> None:
    h = c.header
    if h.width * h.height > max_pixels:
        raise FormatError(f"image is {h.width}x{h.height} ({h.width * h.height / 1e6:.0f} Mpx), over the "
                          f"decoder's limit of {max_pixels / 1e6:.0f} Mpx")
    _, y_shape, z_shape = _latent_shapes(h.height, h.width)
    if tuple(h.y_shape) != y_shape or tuple(h.z_shape) != z_shape:
        raise FormatError("corrupt header: latent shapes do not match the image size")


def decode_container(c: Container, max_pixels: int = MAX_PIXELS):
    """Decode a parsed container to (rgb uint8 HxWx3, alpha or None)."""
    from .weights import load_model

    _check_container(c, max_pixels)
    h = c.header
    model = load_model(h.model_id)
    if not 1 <= h.quality <= model.levels:
        raise FormatError(f"corrupt header: quality {h.quality} not in 1..{model.levels}")
    try:
        out = model.decompress([[c.chunks[b"YSTR"]], [c.chunks[b"ZSTR"]]], h.z_shape, h.quality - 1)
    except (RuntimeError, ValueError) as e:
        raise FormatError(f"corrupt payload: {e}") from None
    if not bool(out["y_hat"].isfinite().all()):
        raise FormatError("corrupt payload: decoded latents are not finite")
    rgb = _to_uint8(out["x_hat"], h.height, h.width)
    alpha = None
    if h.mode in ("LA", "RGBA"):
        try:
            raw = zlib.decompress(c.chunks[b"ALPH"], bufsize=h.width * h.height)
        except zlib.error as e:
            raise FormatError(f"corrupt alpha plane: {e}") from None
        if len(raw) != h.width * h.height:
            raise FormatError("corrupt alpha plane: wrong size")
        alpha = np.frombuffer(raw, dtype=np.uint8).reshape(h.height, h.width)
    return rgb, alpha


def decompress(data: bytes, max_pixels: int = MAX_PIXELS):
    """Decode .aec bytes to a PIL.Image (mode L, LA, RGB or RGBA as the original).

    Raises FormatError (a ValueError) when the data is not a valid .aec file.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    c = unpack(bytes(data))
    rgb, alpha = decode_container(c, max_pixels)
    return planes_to_pil(rgb, alpha, c.header.mode)


def info(data: bytes) -> Dict:
    """The header of .aec bytes as a dict (verifies the checksum; does not decode)."""
    c = unpack(bytes(data))
    d = c.header.to_dict()
    d["file_bytes"] = len(data)
    d["bpp"] = 8 * len(data) / (c.header.width * c.header.height)
    d["chunks"] = {k.decode(): len(v) for k, v in c.chunks.items()}
    return d
