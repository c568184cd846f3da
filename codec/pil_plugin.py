"""Pillow plugin: ``import aecodec`` makes ``Image.open("photo.aec")`` and
``image.save("photo.aec", quality=6)`` work.

Opening reads and verifies the header (cheap, no torch); pixels are decoded on
first access (``load()``), like any lazily-loaded Pillow format.  A file that
fails to decode raises OSError from ``load()``, as Pillow's own formats do; the
decoder's pixel limit (``aecodec.MAX_PIXELS``) applies.  A file that starts like
an .aec file but fails its checks (CRC, header) raises ``UnidentifiedImageError``
with the reason, not Pillow's bare "cannot identify image file".
"""

from __future__ import annotations

from PIL import Image, ImageFile, UnidentifiedImageError

from .format import MAGIC, FormatError, unpack


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


class AecImageFile(ImageFile.ImageFile):
    format = "AEC"
    format_description = "aecodec learned image codec"

    def _open(self) -> None:
        data = self.fp.read()
        try:
            self._container = unpack(data)
        except FormatError as e:  # the magic matched: this is a damaged .aec file, say why
            name = f" {self.filename!r}" if getattr(self, "filename", "") else ""
            raise UnidentifiedImageError(f"cannot open .aec file{name}: {e}") from None
        h = self._container.header
        self._mode = h.mode
        self._size = (h.width, h.height)
        self.info["aec_model"] = h.model_id
        self.info["aec_quality"] = self._container.quality
        from .api import decode_icc

        icc = decode_icc(self._container)
        if icc:
            self.info["icc_profile"] = icc
        self.tile = []

    def load(self):
        if self._im is None and getattr(self, "_container", None) is not None:
            from .api import decode_container
            from .image import planes_to_pil

            try:
                rgb, alpha = decode_container(self._container)
            except FormatError as e:
                raise OSError(f"cannot decode .aec file: {e}") from None
            decoded = planes_to_pil(rgb, alpha, self._container.header.mode)
            self.im = decoded.im
            self._container = None
            # the whole file was read at open: let go of it as Pillow's own formats do after load
            if self._exclusive_fp and self._close_exclusive_fp_after_loading and self.fp is not None:
                self.fp.close()
            self.fp = None
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename) -> None:
    """``im.save("x.aec", quality=6)``: Pillow's ``quality`` is aecodec's (1..8 in steps of 0.01,
    default 6).  As Pillow's own writers do, the pixels are stored as they are (no EXIF
    orientation applied: Pillow keeps a source's EXIF on rotated or cropped copies), with the
    ``icc_profile=`` given, else the image's own."""
    from .api import DEFAULT_QUALITY, check_quality, compress_planes
    from .image import to_planes, usable_icc, warn_notes

    quality = im.encoderinfo.get("quality")
    try:
        if quality is None:
            quality = DEFAULT_QUALITY
        elif not isinstance(quality, bool) and isinstance(quality, (int, float)) and 10 <= quality <= 100:
            raise ValueError(f"quality must be from 1 to 8, got {quality!r} (aecodec's scale is 1..8, "
                             "not JPEG's 0..100)")
        check_quality(quality)
        planes = to_planes(im, orient=False)
        if "icc_profile" in im.encoderinfo:  # given (None drops the image's own)
            planes.icc = usable_icc(im.encoderinfo["icc_profile"], planes.notes)
        warn_notes(planes, stacklevel=4)
        data = compress_planes(planes, quality)
    except ValueError as e:  # a bad quality, an image the format cannot hold: same class (ImageError, SizeError ...)
        try:
            err = type(e)(f"cannot save as .aec: {e}")
        except Exception:  # a class that takes other arguments
            err = ValueError(f"cannot save as .aec: {e}")
        raise err from None
    fp.write(data)


def _save_all(im: Image.Image, fp, filename) -> None:
    """``save_all=True``: an .aec file holds one image, so only a single frame can be saved."""
    n = getattr(im, "n_frames", 1) + len(im.encoderinfo.get("append_images") or [])
    if n > 1:
        raise ValueError(f"cannot save as .aec: the format holds one image and this one has {n} frames "
                         "(save one frame, without save_all=True)")
    _save(im, fp, filename)


def register() -> None:
    Image.register_open(AecImageFile.format, AecImageFile, _accept)
    Image.register_save(AecImageFile.format, _save)
    Image.register_save_all(AecImageFile.format, _save_all)
    Image.register_extension(AecImageFile.format, ".aec")
    Image.register_mime(AecImageFile.format, "image/x-aec")
