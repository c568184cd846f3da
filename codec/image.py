"""Image input/output: reading any Pillow image into the codec's planes, and back.

What happens to each kind of input (see docs/ROBUSTNESS.md):

* L, RGB: coded as they are (grey as three equal channels).
* LA, RGBA, P/PA with transparency, and grey or RGB with a colour key (PNG
  tRNS): colour coded, alpha stored losslessly (a colour key as LA / RGBA).
* P (palette), 1 (bilevel): expanded to RGB / L.
* 16-bit samples: reduced to 8 bits with a warning.  Grey (``I;16``) to the
  nearest 8-bit level, round(v / 257); 16-bit colour PNG/TIFF arrive from
  Pillow already reduced to their high byte (v >> 8, at most one level below
  the nearest).  ``I`` (32-bit) and ``F`` (float) grey likewise, with a warning.
* CMYK: converted to sRGB through its embedded ICC profile when it has one,
  else with Pillow's naive formula (warning: colours approximate).  Other
  modes (YCbCr, LAB, HSV, ...) are converted to RGB.
* EXIF orientation is applied to the pixels (the decoded image is upright).
* An ICC profile of an L/LA/RGB/RGBA/P image is carried in the file and
  restored by the decoder.  Other metadata (EXIF, XMP, text) is not carried.
* Animated images (GIF, APNG, WebP, ...): the first frame, with a warning.
"""

from __future__ import annotations

import functools
import io
import struct
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .format import AecodecError

MAX_ICC_BYTES = 16 * 2**20  # a larger "profile" is dropped with a warning


class ImageError(AecodecError, ValueError):
    """The input is not an image aecodec can read."""


class AecodecWarning(UserWarning):
    """Something about the input was changed or dropped (16-bit, animation, ...)."""


@dataclass
class Planes:
    """An image as the codec sees it: 8-bit RGB (grey replicated), optional 8-bit alpha."""

    rgb: np.ndarray  # H x W x 3 uint8
    alpha: Optional[np.ndarray]  # H x W uint8 or None
    mode: str  # original colour mode the decoder restores: L, LA, RGB or RGBA
    icc: Optional[bytes] = None  # ICC profile to carry, if any
    notes: List[str] = field(default_factory=list)  # what was changed on the way in

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def to_8bit_noted(arr: np.ndarray):
    """(uint8 array, what was done to the values in words, or None when nothing changed)."""
    if arr.dtype == np.uint8:
        return arr, None
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255, None
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        if n_nan:
            raise ImageError(f"the array has {n_nan} NaN sample(s); an image needs a number in every sample")
        arr = np.clip(arr, 0.0, None)  # -inf and negatives: 0
        finite = arr[np.isfinite(arr)]
        unit = finite.max(initial=0) <= 1.0
        out = np.clip(np.nan_to_num(arr * (255.0 if unit else 1.0), posinf=255.0).round(), 0, 255).astype(np.uint8)
        return out, (f"floating-point samples read as {'0..1' if unit else '0..255'} and rounded to 8 bits"
                     + (f"; {n_inf} infinite sample(s) clipped" if n_inf else ""))
    hi, lo = arr.max(initial=0), arr.min(initial=0)
    if (arr.dtype.kind == "u" and arr.dtype.itemsize == 2) or (arr.dtype.kind in "iu" and hi > 255):
        # 16-bit samples (either byte order): the nearest 8-bit level (v / 257 maps 65535 to 255 exactly).
        out = np.clip((arr.astype(np.float64) / 257.0).round(), 0, 255).astype(np.uint8)
        return out, (f"{arr.dtype.name} samples read as 16-bit (0..65535) and reduced to 8 bits"
                     + ("; pass uint8 for 0..255 data" if hi <= 255 else "")
                     + (f"; {int((arr > 65535).sum())} sample(s) above 65535 clipped" if hi > 65535 else "")
                     + ("; negative samples clipped to 0" if lo < 0 else ""))
    if lo < 0:
        return np.clip(arr, 0, 255).astype(np.uint8), "negative samples clipped to 0"
    return arr.astype(np.uint8), None  # integers already within 0..255


def _grey(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2)


def _raw_modes(im: Image.Image) -> List[str]:
    """The file's sample layouts, from ``im.tile``. Pillow empties ``tile`` when it loads the
    pixels, so the first look is kept on the image object, for its current frame: a second
    ``compress(im)`` then reads the image as the first did. (A copy, or an image loaded before
    aecodec saw it, has none.)"""
    try:
        frame = im.tell()
    except Exception:
        frame = 0
    out = []
    for t in getattr(im, "tile", None) or []:
        args = t[3] if len(t) > 3 else None
        out.append(str(args[0] if isinstance(args, tuple) and args else args))
    if out:
        try:
            im._aecodec_raw_modes = (frame, tuple(out))
        except Exception:  # an image class that takes no attributes: no memory, as before
            pass
        return out
    cached = getattr(im, "_aecodec_raw_modes", None)
    return list(cached[1]) if cached is not None and cached[0] == frame else []


def _cmyk_to_rgb(im: Image.Image, icc: Optional[bytes], notes: List[str]) -> Image.Image:
    if icc:
        try:
            import io

            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
        except Exception as e:  # a broken or unsupported profile: fall back, say so
            notes.append(f"CMYK image: its ICC profile could not be applied ({e}); "
                         "converted with the naive formula, colours are approximate")
            return im.convert("RGB")
    notes.append("CMYK image without an ICC profile: converted to RGB with the naive formula, "
                 "colours are approximate")
    return im.convert("RGB")


def usable_icc(icc, notes: List[str]) -> Optional[bytes]:
    """An ICC profile to carry: bytes of 1..MAX_ICC_BYTES, else None (a larger one with a note)."""
    if not icc or not isinstance(icc, (bytes, bytearray)):
        return None
    if len(icc) > MAX_ICC_BYTES:
        notes.append(f"ICC profile of {len(icc)} bytes dropped (limit {MAX_ICC_BYTES})")
        return None
    return bytes(icc)


def planes_from_pil(im: Image.Image, raw_modes: Optional[List[str]] = None, orient: bool = True) -> Planes:
    """Convert a PIL image (any mode) to planes, applying its EXIF orientation (unless not
    ``orient``: Pillow's ``im.save`` keeps the pixels as they are).

    ``raw_modes``: the file's sample layouts (``im.tile`` before ``load()``
    empties it), to tell 16-bit colour files from 8-bit ones.
    """
    notes: List[str] = []
    raw_modes = _raw_modes(im) if raw_modes is None else raw_modes
    try:
        if getattr(im, "is_animated", False) or getattr(im, "n_frames", 1) > 1:
            k = im.tell()
            notes.append(f"image has {im.n_frames} frames (animation or pages): only "
                         + (f"frame {k + 1} (the current one)" if k else "the first") + " is coded")
    except Exception:  # n_frames reads the whole file; a broken later frame is not this frame's problem
        pass
    try:
        if orient:
            im = ImageOps.exif_transpose(im)
    except Exception:  # broken EXIF must not stop the image from being coded
        notes.append("unreadable EXIF orientation ignored")
    icc = usable_icc(im.info.get("icc_profile"), notes)
    mode = im.mode
    wide = any(";16" in r for r in raw_modes) or mode.startswith("I;16")
    if wide:
        notes.append("16-bit samples reduced to 8 bits (aecodec codes 8 bits per sample)")

    if mode in ("P", "PA"):
        palette_alpha = getattr(getattr(im, "palette", None), "mode", None) == "RGBA"  # e.g. RGBA.quantize()
        keyed = "transparency" in im.info  # (convert() drops it)
        im = im.convert("RGBA" if (keyed or mode == "PA" or palette_alpha) else "RGB")
        if palette_alpha and mode == "P" and not keyed and im.getchannel("A").getextrema()[0] == 255:
            im = im.convert("RGB")  # a palette alpha that no pixel uses: nothing to keep
        mode = im.mode
    if mode == "RGBA" and any(r.startswith("LA;") for r in raw_modes):
        from PIL import ImageChops

        r, g, b = im.getchannel("R"), im.getchannel("G"), im.getchannel("B")
        if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None:
            im, mode = im.convert("LA"), "LA"  # Pillow opens 16-bit grey+alpha PNG as RGBA (still grey: not
            # drawn on in colour since aecodec first saw it)
    key_alpha = _colour_key_alpha(im, raw_modes, notes)
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("CMYK",):
        im, mode, icc = _cmyk_to_rgb(im, icc, notes), "RGB", None
    if mode.startswith("I;16") or mode in ("I", "F"):
        g, note = to_8bit_noted(np.asarray(im))
        if note and not wide:
            notes.append(note)
        return Planes(_grey(g), key_alpha, "L" if key_alpha is None else "LA", icc, notes)
    if mode == "L":
        return Planes(_grey(np.asarray(im, dtype=np.uint8)), key_alpha, "L" if key_alpha is None else "LA", icc, notes)
    if mode in ("LA", "La"):
        a = np.asarray(im.convert("LA"), dtype=np.uint8)
        return Planes(_grey(a[:, :, 0]), a[:, :, 1].copy(), "LA", icc, notes)
    if mode in ("RGBA", "RGBa"):
        a = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return Planes(a[:, :, :3].copy(), a[:, :, 3].copy(), "RGBA", icc, notes)
    if mode != "RGB":
        try:
            im = im.convert("RGB")  # YCbCr, LAB, HSV, RGBX, ...
        except ValueError as e:
            raise ImageError(f"cannot convert a {mode} image to RGB ({e})") from None
        if mode not in ("RGBX", "YCbCr"):
            icc = None  # the profile described the old colour space
    if mode == "RGB" and key_alpha is not None:
        return Planes(np.asarray(im, dtype=np.uint8).copy(), key_alpha, "RGBA", icc, notes)
    return Planes(np.asarray(im, dtype=np.uint8).copy(), None, "RGB", icc, notes)


def _colour_key_alpha(im: Image.Image, raw_modes: List[str], notes: List[str]) -> Optional[np.ndarray]:
    """The alpha plane of a colour-key transparency (PNG's tRNS on a grey or RGB image:
    the pixels of one exact value are transparent), or None when the image has none or no
    pixel has that value.  ``raw_modes``: the file's sample layouts (a 16-bit RGB PNG comes
    from Pillow reduced to its high bytes while its key stays 16-bit; 2- and 4-bit grey come
    scaled to 0..255 while the key does not)."""
    t = im.info.get("transparency")
    if t is None or isinstance(t, (bytes, bytearray)):
        return None
    arr = np.asarray(im)
    if im.mode == "RGB":
        if not (isinstance(t, tuple) and len(t) == 3):
            return None
        # a component above 255 proves a 16-bit key even where the image was loaded before
        # aecodec could see its sample layout (its tile is gone)
        wide = any(";16" in r for r in raw_modes) or (not raw_modes and any(int(v) > 255 for v in t))
        hit = np.all(arr == np.array([int(v) >> 8 if wide else int(v) for v in t]), axis=2)
        if wide and hit.any():
            notes.append("16-bit colour key matched on the high byte of each sample (Pillow reads the "
                         "samples as 8 bits): colours within 1/256 of it are transparent too")
    elif im.mode in ("1", "L", "I") or im.mode.startswith("I;16"):
        if not isinstance(t, (int, np.integer)):
            return None
        scale = {"L;1": 255, "L;2": 85, "L;4": 17}.get(next((r for r in raw_modes if r.startswith("L;")), ""), 1)
        hit = arr == (bool(t) if im.mode == "1" else int(t) * scale)
    else:
        return None
    if not hit.any():
        return None
    return np.where(hit, 0, 255).astype(np.uint8)


def planes_from_array(arr: np.ndarray) -> Planes:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise ImageError(f"expected an array of numbers, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4)):
        a, note = to_8bit_noted(arr)
        notes = [note] if note else []
        if a.ndim == 2:
            return Planes(_grey(a), None, "L", None, notes)
        if a.shape[2] == 2:  # grey + alpha, as np.asarray of an LA image
            return Planes(_grey(a[:, :, 0]), np.ascontiguousarray(a[:, :, 1]), "LA", None, notes)
        if a.shape[2] == 4:
            return Planes(np.ascontiguousarray(a[:, :, :3]), np.ascontiguousarray(a[:, :, 3]), "RGBA", None, notes)
        return Planes(np.ascontiguousarray(a), None, "RGB", None, notes)
    raise ImageError(f"expected an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array, got shape {arr.shape}")


# what Pillow raises for a file it cannot decode (after opening it)
_PIL_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)


def to_planes(image, orient: bool = True) -> Planes:
    """Planes of a PIL image (its EXIF orientation applied, unless not ``orient``) or an array."""
    if isinstance(image, Image.Image):
        raw_modes = _raw_modes(image)  # before load() forgets them
        try:  # a lazily opened file that turns out truncated or corrupt, or closed: said as such
            image.load()
        except _PIL_READ_ERRORS + (AssertionError,) as e:
            raise ImageError(f"cannot read the image ({_one_line(e)})") from None
        try:
            p = planes_from_pil(image, raw_modes, orient)
        except (OSError, SyntaxError, EOFError) as e:  # e.g. a broken later frame read for n_frames
            raise ImageError(f"cannot read the image ({_one_line(e)})") from None
    elif isinstance(image, np.ndarray):
        p = planes_from_array(image)
    else:
        raise TypeError(f"expected a PIL.Image or a numpy array, got {type(image).__name__}")
    if p.width < 1 or p.height < 1:
        raise ImageError("image has no pixels")
    return p


def pixel_limit(max_pixels) -> Optional[int]:
    """``max_pixels`` as the API takes it: a positive whole number, or None or 0 for no limit
    (as ``--max-pixels 0`` on the command line)."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise TypeError(f"max_pixels must be a whole number of pixels or None, got {max_pixels!r}")
    if max_pixels < 0:
        raise ValueError(f"max_pixels must be positive (0 or None: no limit), got {max_pixels}")
    return int(max_pixels) or None


def check_size(width: int, height: int, max_pixels: Optional[int], what: str = "image") -> None:
    """Refuse sizes the format cannot hold, and sizes over ``max_pixels`` (None or 0: no limit)."""
    from .format import MAX_DIMENSION

    max_pixels = pixel_limit(max_pixels)

    if width < 1 or height < 1:
        raise ImageError(f"{what} has no pixels")
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise ImageError(f"{what} is {width}x{height}; an .aec file holds at most {MAX_DIMENSION} pixels per side")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{what} is {width}x{height} ({pixels_in_words(width * height)}), over the limit of "
                         f"{pixels_in_words(max_pixels)} (raise it with --max-pixels / max_pixels=)")


def pixels_in_words(n: int) -> str:
    """'134.2 Mpx', or '16384 pixels' under a megapixel (where 'Mpx' would read 0.0)."""
    return f"{n / 1e6:.1f} Mpx" if n >= 10**6 else f"{n} pixels"


_pillow_limit_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def register_plugins() -> Tuple[str, ...]:
    """Register the Pillow plugins for HEIF (pillow-heif) and JPEG XL (pillow-jxl-plugin)
    where they are installed (``pip install 'aecodec[bench]'`` brings both), so that .heic
    and .jxl images can be read and written.  Returns the formats added; once per process."""
    added = []
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        added.append("HEIF")
    except Exception:  # not installed, or its native library does not load: those formats stay unknown
        pass
    try:
        import pillow_jxl  # noqa: F401  (registers JXL on import)

        added.append("JXL")
    except Exception:
        pass
    return tuple(added)


def open_image(src, name: Optional[str] = None, max_pixels: Optional[int] = None) -> Planes:
    """Read an image from a path or a binary file object. Raises ImageError with a one-line reason.

    The size is checked against ``max_pixels`` before any pixel is decoded
    (this replaces Pillow's own decompression-bomb limit).  Notes about what
    was changed (16-bit, animation, ...) are in ``Planes.notes``.
    """
    if not hasattr(src, "read"):
        src = Path(src)
    path = name or str(src if isinstance(src, Path) else "<stream>")
    register_plugins()
    bug = None  # an exception of aecodec's own conversion: not to be reported as a bad file
    try:
        with _pillow_limit_lock:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before decoding
            try:
                im = Image.open(src)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with im:
            check_size(im.width, im.height, max_pixels, what="image")
            raw_modes = _raw_modes(im)
            im.load()
            try:
                return planes_from_pil(im, raw_modes)
            except (ImageError, OSError, SyntaxError, EOFError, MemoryError):
                raise  # the file's (e.g. a broken later frame read for n_frames), or memory: below
            except Exception as e:
                bug = e
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode the image") from None
    except _PIL_READ_ERRORS as e:
        raise ImageError(f"{path}: cannot decode image ({_one_line(e)})") from None
    raise bug


def _one_line(e: BaseException) -> str:
    s = str(e) or type(e).__name__
    return " ".join(s.split())[:200]


def warn_notes(planes: Planes, stacklevel: int = 3) -> None:
    for n in planes.notes:
        warnings.warn(n, AecodecWarning, stacklevel=stacklevel)


def planes_to_pil(rgb: np.ndarray, alpha: Optional[np.ndarray], mode: str, icc: Optional[bytes] = None) -> Image.Image:
    if mode in ("L", "LA"):
        # The codec works in RGB; grey is restored as the rounded channel mean.
        # round((r+g+b)/3): a third is never exactly .5, so this is (s + 1) // 3
        g = ((rgb.astype(np.uint16).sum(axis=2, dtype=np.uint16) + 1) // 3).astype(np.uint8)
        im = Image.fromarray(g, "L") if mode == "L" else Image.fromarray(np.stack([g, alpha], axis=2), "LA")
    elif mode == "RGBA":
        im = Image.fromarray(np.concatenate([rgb, alpha[:, :, None]], axis=2), "RGBA")
    else:
        im = Image.fromarray(rgb, "RGB")
    if icc:
        im.info["icc_profile"] = icc
    return im


# -- writing a decoded image in another format ---------------------------------

# Lossy formats Pillow writes (PDF and MPO store JPEG), and the quality keyword each takes (1..100).
LOSSY_OUTPUTS = {"JPEG": "quality", "WEBP": "quality", "AVIF": "quality", "HEIF": "quality", "JXL": "quality",
                 "MPO": "quality", "PDF": "quality"}
DEFAULT_OUTPUT_QUALITY = 95  # a second lossy step should cost little
# Formats whose Pillow writer stores an ICC profile (JPEG 2000, BMP, GIF do not).
ICC_OUTPUTS = {"PNG", "JPEG", "MPO", "WEBP", "TIFF", "AVIF", "HEIF", "JXL"}
MAX_SIDE = {"ICO": 256}  # Pillow scales a larger image down to fit
ICON_SIZES = {"ICNS": "ICNS stores fixed square icon sizes (the image would be stretched)"}


@dataclass
class SavePlan:
    """How a decoded image is written as ``fmt``: Pillow's save keywords and the warnings to give."""

    fmt: str
    params: dict
    warnings: List[str]
    lossy: Optional[int] = None  # the quality of a lossy format
    keep_icc: bool = False  # pass the image's ICC profile as ``icc_profile``


@functools.lru_cache(maxsize=None)
def _writes(fmt: str, mode: str) -> Optional[str]:
    """None if Pillow writes ``mode`` as ``fmt`` (a small image, in memory), else why not."""
    try:
        Image.new(mode, (32, 32)).save(io.BytesIO(), format=fmt)
        return None
    except Exception as e:  # noqa: BLE001  (Pillow's writers raise many kinds)
        return _one_line(e)


@functools.lru_cache(maxsize=None)
def _keeps_alpha(fmt: str, mode: str) -> bool:
    """Does a ``mode`` image written as ``fmt`` read back with its alpha channel?  Decided by a
    round trip (BMP's 32-bit variant, for one, is read back without it; so are most formats)."""
    a = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    im = Image.merge(mode, [Image.fromarray(a)] * (len(mode) - 1) + [Image.fromarray(a.T.copy())])
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
        with Image.open(io.BytesIO(buf.getvalue())) as back:
            back.load()
            return back.mode in ("LA", "RGBA", "La", "RGBa", "PA")
    except Exception:  # noqa: BLE001  (a format Pillow writes but cannot read back: not trusted)
        return False


def save_plan(fmt: str, mode: str, icc: bool = False, quality: Optional[int] = None,
              size: Optional[Tuple[int, int]] = None) -> SavePlan:
    """Decide, before decoding, how an image of ``mode`` (L, LA, RGB, RGBA) and ``size`` is
    written as Pillow format ``fmt``.  Raises ImageError when the format cannot hold the
    image (alpha in JPEG or BMP, a mode Pillow cannot write in that format, an image
    too large for ICO), so that nothing is decoded in vain and no partial file is written."""
    alpha = mode in ("LA", "RGBA")
    why = _writes(fmt, mode)
    if why is not None and not alpha:
        raise ImageError(f"{fmt} cannot hold a {mode} image ({why}); use .png")
    if alpha and fmt != "GIF" and (why is not None or not _keeps_alpha(fmt, mode)):
        raise ImageError(f"{fmt} cannot hold the alpha channel; use .png (or .webp, .tiff)")
    if fmt in ICON_SIZES:
        raise ImageError(f"{ICON_SIZES[fmt]}; use .png")
    if size and fmt in MAX_SIDE and max(size) > MAX_SIDE[fmt]:
        raise ImageError(f"{fmt} holds at most {MAX_SIDE[fmt]}x{MAX_SIDE[fmt]} pixels; this image is "
                         f"{size[0]}x{size[1]} (use .png)")
    params, notes = {}, []
    if fmt == "ICO" and size:
        params["sizes"] = [tuple(size)]  # the image's own size, not Pillow's standard sizes below it
    q = None
    if fmt in LOSSY_OUTPUTS:
        q = DEFAULT_OUTPUT_QUALITY if quality is None else int(quality)
        if not 1 <= q <= 100:
            raise ValueError(f"output quality {q} is not in 1..100")
        params[LOSSY_OUTPUTS[fmt]] = q
        if fmt in ("JPEG", "MPO"):
            params["subsampling"] = 0  # 4:4:4: the decoded colours are not halved again
    elif quality is not None:
        notes.append(f"the output quality {quality} does not apply to {fmt} "
                     "(it is for .jpg, .webp, .avif, .heic, .jxl)")
    if fmt == "GIF":
        notes.append("GIF holds at most 256 colours and no partial transparency: the image is reduced to "
                     "a palette" + (" and its alpha channel may be lost" if alpha else "")
                     + " (use .png to keep it as decoded)")
    keep_icc = bool(icc) and fmt in ICC_OUTPUTS
    if icc and not keep_icc:
        notes.append(f"{fmt} cannot hold the image's ICC profile; it is not saved")
    return SavePlan(fmt, params, notes, q, keep_icc)
