"""aecodec: a learned image codec.

    >>> import aecodec
    >>> data = aecodec.compress(image, quality=6)   # PIL.Image or HxW[x1|2|3|4] array -> bytes
    >>> image = aecodec.decompress(data)            # -> PIL.Image

Every error about data, images, sizes or weights is an ``aecodec.AecodecError``
(FormatError, ImageError, SizeError: also ValueError; WeightsError and
DecoderUnavailable: also RuntimeError).  Decoding runs compressai's entropy decoder in a short-lived
worker process (``sys.executable``), so a crafted file cannot crash the caller.
Calls may come from several threads; a process forked after aecodec was used
runs torch on one thread (torch's OpenMP pool does not survive ``fork``).

``import aecodec`` is light (torch loads on first use) and registers a Pillow
plugin, so ``PIL.Image.open("photo.aec")`` decodes .aec files.
"""

from .api import DEFAULT_QUALITY, MAX_PIXELS, QUALITIES, SizeError, compress, compress_to_size, decompress, info
from .format import FORMAT_VERSION, AecodecError, DecoderUnavailable, FormatError
from .image import AecodecWarning, ImageError
from .weights import WeightsError

__version__ = "0.2.0"

__all__ = [
    "compress",
    "compress_to_size",
    "decompress",
    "info",
    "QUALITIES",
    "DEFAULT_QUALITY",
    "MAX_PIXELS",
    "FORMAT_VERSION",
    "AecodecError",
    "FormatError",
    "DecoderUnavailable",
    "ImageError",
    "AecodecWarning",
    "WeightsError",
    "SizeError",
    "__version__",
]

from . import pil_plugin as _pil_plugin  # noqa: E402

_pil_plugin.register()
