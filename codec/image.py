"""Image input/output: reading any Pillow image into the codec's planes, and back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """The input is not an image aecodec can read."""


@dataclass
class Planes:
    """An image as the codec sees it: 8-bit RGB (grey replicated), optional 8-bit alpha."""

    rgb: np.ndarray  # H x W x 3 uint8
    alpha: Optional[np.ndarray]  # H x W uint8 or None
    mode: str  # original colour mode the decoder restores: L, LA, RGB or RGBA

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 or arr.dtype == np.int32 and arr.max(initial=0) > 255:
        # 16-bit samples: keep the 8 most significant bits (rounded).
        return np.clip((arr.astype(np.float64) / 257.0).round(), 0, 255).astype(np.uint8)
    if arr.dtype.kind == "f":
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return np.clip((arr * scale).round(), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def planes_from_pil(im: Image.Image) -> Planes:
    """Convert a PIL image (any mode) to planes, applying its EXIF orientation."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # broken EXIF must not stop the image from being coded
        pass
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = _to_8bit(np.asarray(im))
        return Planes(np.repeat(grey[:, :, None], 3, axis=2).copy(), None, "L")
    if mode == "L":
        g = np.asarray(im, dtype=np.uint8)
        return Planes(np.repeat(g[:, :, None], 3, axis=2).copy(), None, "L")
    if mode == "LA" or mode == "La":
        a = np.asarray(im.convert("LA"), dtype=np.uint8)
        return Planes(np.repeat(a[:, :, :1], 3, axis=2).copy(), a[:, :, 1].copy(), "LA")
    if mode in ("RGBA", "RGBa"):
        a = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return Planes(a[:, :, :3].copy(), a[:, :, 3].copy(), "RGBA")
    if mode != "RGB":
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    return Planes(np.asarray(im, dtype=np.uint8).copy(), None, "RGB")


def planes_from_array(arr: np.ndarray) -> Planes:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        g = _to_8bit(arr)
        return Planes(np.repeat(g[:, :, None], 3, axis=2).copy(), None, "L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        a = _to_8bit(arr)
        if a.shape[2] == 4:
            return Planes(np.ascontiguousarray(a[:, :, :3]), np.ascontiguousarray(a[:, :, 3]), "RGBA")
        return Planes(np.ascontiguousarray(a), None, "RGB")
    raise ImageError(f"expected an HxW, HxWx3 or HxWx4 array, got shape {arr.shape}")


def to_planes(image) -> Planes:
    if isinstance(image, Image.Image):
        p = planes_from_pil(image)
    elif isinstance(image, np.ndarray):
        p = planes_from_array(image)
    else:
        raise TypeError(f"expected a PIL.Image or a numpy array, got {type(image).__name__}")
    if p.width < 1 or p.height < 1:
        raise ImageError("image has no pixels")
    return p


def open_image(src, name: Optional[str] = None) -> Planes:
    """Read an image from a path or a binary file object. Raises ImageError with a one-line reason."""
    if not hasattr(src, "read"):
        src = Path(src)
    path = name or str(src if isinstance(src, Path) else "<stream>")
    try:
        with Image.open(src) as im:
            if getattr(im, "n_frames", 1) > 1:
                import warnings

                warnings.warn(f"{path}: animated image, only the first frame is coded", stacklevel=2)
            im.load()
            return to_planes(im)
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
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None


def planes_to_pil(rgb: np.ndarray, alpha: Optional[np.ndarray], mode: str) -> Image.Image:
    if mode in ("L", "LA"):
        # The codec works in RGB; grey is restored as the rounded channel mean.
        g = np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        if mode == "L":
            return Image.fromarray(g, "L")
        return Image.fromarray(np.stack([g, alpha], axis=2), "LA")
    if mode == "RGBA":
        return Image.fromarray(np.concatenate([rgb, alpha[:, :, None]], axis=2), "RGBA")
    return Image.fromarray(rgb, "RGB")
