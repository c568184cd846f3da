"""Public API: image -> .aec bytes -> image."""

from __future__ import annotations

import decimal
import math
import numbers
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from .format import AecodecError, Container, FormatError, Header, join_quality, pack, unpack
from .image import MAX_ICC_BYTES, Planes, check_size, pixel_limit, pixels_in_words, planes_to_pil, to_planes, warn_notes

QUALITIES = (1, 2, 3, 4, 5, 6, 7, 8)
DEFAULT_QUALITY = 6
MULTIPLE = 64  # g_a downsamples 16x, h_a 4x more

# Largest image (pixels) the decoder will allocate for, and the encoder will
# write by default: the decompression-bomb guard (docs/ROBUSTNESS.md).  Raise it
# per call with max_pixels= (command line: --max-pixels).
MAX_PIXELS = 2**27  # 134 Mpx
# compress_to_size tries every whole level of images up to this size (their file sizes need not
# grow with the quality: a 64x64 flat image gives 90, 94, 90, ... bytes); larger ones are searched.
SCAN_PIXELS = 256 * 256
PRECISIONS = ("float32", "float64")


def check_quality(quality):
    """The quality as it will be coded: an int for a whole level (1..8), else a float with two
    decimals between two levels (5.5, 6.25: the gains are interpolated, docs/FORMAT.md).  More
    decimals are rounded to hundredths.  ValueError for anything else."""
    if isinstance(quality, bool) or not isinstance(quality, (numbers.Real, decimal.Decimal, np.integer, np.floating)):
        raise ValueError(f"quality must be a number from {QUALITIES[0]} to {QUALITIES[-1]} "
                         f"(in steps of 0.01), got {quality!r}")
    q = float(quality)
    if not math.isfinite(q) or not 100 * QUALITIES[0] <= round(q * 100) <= 100 * QUALITIES[-1]:
        raise ValueError(f"quality must be from {QUALITIES[0]} to {QUALITIES[-1]}, got {quality!r}")
    return join_quality(*split_quality(q))


def split_quality(quality) -> Tuple[int, int]:
    """(level, hundredths) of a quality: 5 -> (5, 0), 6.25 -> (6, 25)."""
    c = int(round(float(quality) * 100))
    return c // 100, c % 100


def _latent_shapes(h: int, w: int):
    ph, pw = -(-h // MULTIPLE) * MULTIPLE, -(-w // MULTIPLE) * MULTIPLE
    return (ph, pw), (ph // 16, pw // 16), (ph // 64, pw // 64)


def _pad(rgb: np.ndarray) -> np.ndarray:
    """Edge-pad HxWx3 uint8 to a multiple of 64 on each side."""
    h, w = rgb.shape[:2]
    (ph, pw), _, _ = _latent_shapes(h, w)
    if (ph, pw) != (h, w):
        rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb)


def _to_tensor(rgb: np.ndarray):
    """HxWx3 uint8 -> 1x3xH'xW' float in [0,1], edge-padded to a multiple of 64."""
    import torch

    rgb = _pad(rgb)
    if not rgb.flags.writeable:
        rgb = rgb.copy()
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255.0)


def _to_uint8(x_hat, h: int, w: int) -> np.ndarray:
    x = x_hat[0, :, :h, :w].mul(255.0).round_().clamp_(0, 255).to(dtype=__import__("torch").uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


class SizeError(AecodecError, ValueError):
    """No quality level gives a file as small as asked (``compress_to_size``)."""


def compress_planes(planes: Planes, quality=DEFAULT_QUALITY, model_id: Optional[str] = None,
                    max_pixels: Optional[int] = MAX_PIXELS, tile: Optional[int] = None,
                    max_bytes: Optional[int] = None) -> bytes:
    """The .aec bytes of ``planes`` at ``quality``; with ``max_bytes``, at the highest quality up
    to ``quality``, in steps of 0.01, whose whole file fits, or SizeError.  The whole levels are
    tried from ``quality`` down (file sizes nearly always grow with the level, but not on tiny
    flat images), then the hundredths above the first that fits are searched (guessing from
    the sizes, with a halving every third probe) for one that fits while the next 0.01 up does
    not: the highest wherever sizes grow with the quality, as they do on photos.  Images over
    SCAN_PIXELS skip the scan: quality 1, then the search from there (or SizeError at once when
    quality 1 is over 1.1x the limit).  All of it shares one analysis transform."""
    max_pixels = pixel_limit(max_pixels)
    from . import coding, tiling
    from .weights import load_model

    level, frac = split_quality(check_quality(quality))
    check_size(planes.width, planes.height, max_pixels)
    model = load_model(model_id)
    if level + (frac > 0) > model.levels:
        raise ValueError(f"model {model.model_id} has {model.levels} quality levels")
    tile = tile or tiling.TILE
    padded = _pad(planes.rgb)
    extra = _side_chunks(planes)
    if max_bytes is None:
        return _pack(model, planes, level, frac, coding.encode(model, padded, level - 1, tile, frac=frac), extra)
    _check_max_bytes(max_bytes)
    analysed = coding.analysis(model, padded, 1.0, tile)

    tried = {}

    def at(c: int) -> bytes:  # the file at quality c / 100 (each coded once)
        if c not in tried:
            tried[c] = _pack(model, planes, c // 100, c % 100,
                             coding.encode(model, padded, c // 100 - 1, tile, analysed, c % 100), extra)
        return tried[c]

    top = 100 * level + frac
    data = at(top)
    if len(data) <= max_bytes:
        return data
    too_big, big_size, smallest, fits = top, len(data), len(data), None
    if top > 100 and planes.width * planes.height > SCAN_PIXELS:  # a photo: sizes grow with the quality
        first = at(100)
        if len(first) <= max_bytes:
            fits, data = 100, first
        elif len(first) > 1.1 * max_bytes:  # far over: no quality fits (and no need to try them all)
            raise SizeError(f"even quality 1 needs {len(first)} bytes, over the {max_bytes} allowed")
    if fits is None:  # a small image, or a budget near the smallest file: every level, from the top down
        for c in range(100 * ((top - 1) // 100), 0, -100):
            data = at(c)
            if len(data) <= max_bytes:
                break
            too_big, big_size, smallest = c, len(data), min(smallest, len(data))
        else:
            raise SizeError(f"even the smallest file (quality 1..{join_quality(level, frac)}) needs {smallest} "
                            f"bytes, over the {max_bytes} allowed")
        fits = c
    fit_size = len(data)
    for step in range(100):  # (it ends long before: at most ~10 halvings of 700 hundredths)
        if too_big - fits <= 1:
            break
        if step % 3 == 2:  # every third probe halves, so a bad guess cannot drag on
            mid = (fits + too_big) // 2
        else:  # file size grows about exponentially with the quality: guess where it meets the limit
            t = math.log(max_bytes / fit_size) / math.log(big_size / fit_size) if big_size > fit_size else 0.5
            mid = min(max(fits + round(t * (too_big - fits)), fits + 1), too_big - 1)
        candidate = at(mid)
        if len(candidate) <= max_bytes:
            fits, fit_size, data = mid, len(candidate), candidate
        else:
            too_big, big_size = mid, len(candidate)
    return data


def _check_max_bytes(max_bytes) -> None:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")


def _side_chunks(planes: Planes):
    """The chunks that do not depend on the quality level: alpha plane, ICC profile."""
    chunks = []
    if planes.alpha is not None:
        chunks.append((b"ALPH", zlib.compress(np.ascontiguousarray(planes.alpha).tobytes(), 9)))
    if planes.icc and len(planes.icc) <= MAX_ICC_BYTES:
        chunks.append((b"iCCP", zlib.compress(bytes(planes.icc), 9)))
    return chunks


def _pack(model, planes: Planes, q: int, frac: int, enc, side_chunks) -> bytes:
    chunks = [(b"ZSTR", enc.z_string), (b"YSTR", enc.y_string)]
    if enc.guard:
        chunks.append((b"YIDX", enc.guard))
    if frac:
        chunks.append((b"QFRC", bytes([frac])))
    chunks += side_chunks
    header = Header(model_id=model.model_id, quality=q, mode=planes.mode, width=planes.width,
                    height=planes.height, y_shape=enc.y_shape, z_shape=enc.z_shape)
    return pack(header, chunks)


def compress_to_size(image, max_bytes: int, max_quality=QUALITIES[-1],
                     max_pixels: Optional[int] = MAX_PIXELS) -> bytes:
    """Compress at the highest quality (up to ``max_quality``, in steps of 0.01) whose .aec
    file, header included, is at most ``max_bytes`` bytes.  The result is byte for byte what
    ``compress(image, quality=aecodec.info(result)["quality"])`` gives.  Raises SizeError (a
    ValueError) when even quality 1 is larger."""
    max_pixels = pixel_limit(max_pixels)
    check_quality(max_quality)
    _check_max_bytes(max_bytes)  # None too: here it is not "no limit"
    planes = to_planes(image)
    warn_notes(planes)
    return compress_planes(planes, max_quality, max_pixels=max_pixels, max_bytes=max_bytes)


def compress(image, quality=DEFAULT_QUALITY, max_pixels: Optional[int] = MAX_PIXELS) -> bytes:
    """Compress a PIL.Image or an HxW / HxWx1 (grey), HxWx2 (grey + alpha), HxWx3 or HxWx4 uint8
    array to .aec bytes.

    ``quality``: a level of ``QUALITIES`` (1, smallest file, .. 8, best image), or a number
    between two levels in steps of 0.01 (e.g. 6.5), coded with gains interpolated between them.
    Raises ValueError for a quality outside 1..8 and ImageError (a
    ValueError) for an image over ``max_pixels`` (None or 0: no limit) or one the
    format cannot hold.  What was changed on the way in (16-bit samples,
    animation, CMYK) is reported as an ``AecodecWarning``.
    """
    max_pixels = pixel_limit(max_pixels)
    check_quality(quality)
    planes = to_planes(image)
    warn_notes(planes)
    return compress_planes(planes, quality, max_pixels=max_pixels)


def _check_container(c: Container, max_pixels: Optional[int]) -> None:
    max_pixels = pixel_limit(max_pixels)
    h = c.header
    if max_pixels is not None and h.width * h.height > max_pixels:
        raise FormatError(f"image is {h.width}x{h.height} ({pixels_in_words(h.width * h.height)}), over the "
                          f"decoder's limit of {pixels_in_words(max_pixels)} (raise it with --max-pixels / "
                          f"max_pixels= if you trust the file)")
    _, y_shape, z_shape = _latent_shapes(h.height, h.width)
    if tuple(h.y_shape) != y_shape or tuple(h.z_shape) != z_shape:
        raise FormatError("corrupt header: latent shapes do not match the image size")


def _inflate(blob: bytes, limit: int, what: str) -> bytes:
    """zlib-decompress at most ``limit`` bytes (a zlib bomb cannot allocate more)."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(blob, limit)
    except zlib.error as e:
        raise FormatError(f"corrupt {what}: {e}") from None
    if d.unconsumed_tail or not d.eof or d.unused_data:
        raise FormatError(f"corrupt {what}: wrong size")
    return raw


def decode_icc(c: Container) -> Optional[bytes]:
    blob = c.ancillary_chunk(b"iCCP")
    if blob is None:
        return None
    try:
        return _inflate(blob, MAX_ICC_BYTES, "ICC profile") or None
    except FormatError:
        return None  # ancillary: a damaged profile is dropped, the image still decodes


def decode_container(c: Container, max_pixels: Optional[int] = MAX_PIXELS, precision: str = "float32",
                     tile: Optional[int] = None):
    """Decode a parsed container to (rgb uint8 HxWx3, alpha or None)."""
    max_pixels = pixel_limit(max_pixels)
    from . import coding, tiling
    from .weights import load_model

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    _check_container(c, max_pixels)
    h = c.header
    alpha = None
    if h.mode in ("LA", "RGBA"):  # cheap checks first
        raw = _inflate(c.chunks[b"ALPH"], h.width * h.height, "alpha plane")
        if len(raw) != h.width * h.height:
            raise FormatError("corrupt alpha plane: wrong size")
        alpha = np.frombuffer(raw, dtype=np.uint8).reshape(h.height, h.width)
    model = load_model(h.model_id)
    level, frac = c.quality_parts
    rgb = coding.decode(model, c.chunks[b"ZSTR"], c.chunks[b"YSTR"], c.chunks.get(b"YIDX", b""),
                        tuple(h.z_shape), level - 1, h.height, h.width, precision, tile or tiling.TILE, frac)
    return rgb, alpha


def decompress(data: bytes, max_pixels: Optional[int] = MAX_PIXELS, precision: str = "float32"):
    """Decode .aec bytes to a PIL.Image (mode L, LA, RGB or RGBA as the original).

    ``max_pixels`` refuses files that claim more pixels before anything is
    allocated (None or 0: no limit).  ``precision="float64"`` runs the synthesis
    transform in float64: slower (about 3x), but the pixels no longer depend
    on the convolution kernels of the machine (see docs/ROBUSTNESS.md).

    Raises FormatError (a ValueError) when the data is not a valid .aec file.
    """
    max_pixels = pixel_limit(max_pixels)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    c = unpack(bytes(data))
    rgb, alpha = decode_container(c, max_pixels, precision)
    icc = decode_icc(c)
    if icc is None and c.ancillary_chunk(b"iCCP"):
        import warnings

        from .image import AecodecWarning

        warnings.warn(f"the file's ICC profile is damaged or inflates to nothing or over {MAX_ICC_BYTES >> 20} MiB: "
                      "dropped (the colours are as coded)", AecodecWarning, stacklevel=2)
    return planes_to_pil(rgb, alpha, c.header.mode, icc)


def info(data: bytes) -> Dict:
    """The header of .aec bytes as a dict (verifies the checksum; does not decode)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    c = unpack(bytes(data))
    d = c.header.to_dict()
    d["quality"] = c.quality  # with a QFRC chunk, between two levels (a float)
    n = memoryview(data).nbytes  # bytes, also for a memoryview of wider items
    d["file_bytes"] = n
    d["bpp"] = 8 * n / (c.header.width * c.header.height)
    d["chunks"] = {k.decode(): len(v) for k, v in c.chunks.items()}
    for tag, blob in c.ancillary:
        d["chunks"].setdefault(tag.decode("latin-1"), len(blob))
    icc = decode_icc(c)
    d["icc_profile_bytes"] = len(icc) if icc else 0
    from .weights import WeightsError, model_problem, model_qualities

    try:
        problem = model_problem(c.header.model_id)
        problem = problem and f"the file {problem}"
    except WeightsError as e:
        problem = str(e)
    except (KeyError, TypeError, AttributeError) as e:  # a manifest in the wrong shape
        problem = f"the weights manifest is damaged ({type(e).__name__}: {e}); reinstall aecodec"
    d["decodable"] = problem is None  # by this installation's models (the header alone says nothing)
    if problem:
        d["model_problem"] = problem
    else:  # the model is here: is the quality one of its levels? (a CRC-valid header can still lie)
        levels = model_qualities(c.header.model_id)
        level, frac = c.quality_parts
        if levels and (level not in levels or (frac and level + 1 not in levels)):
            d["decodable"] = False
            d["quality_problem"] = (f"quality {c.quality} is not {'between levels' if frac else 'a level'} of model "
                                    f"{c.header.model_id} ({levels[0]}..{levels[-1]}): a damaged header")
    return d

