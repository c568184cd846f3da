"""aecodec: a learned image codec.

    >>> import aecodec
    >>> data = aecodec.compress(image, quality=6)   # PIL.Image or HxWx3 uint8 array -> bytes
    >>> image = aecodec.decompress(data)            # -> PIL.Image

``import aecodec`` is light (torch loads on first use) and registers a Pillow
plugin, so ``PIL.Image.open("photo.aec")`` decodes .aec files.
"""

from .api import DEFAULT_QUALITY, MAX_PIXELS, QUALITIES, SizeError, compress, compress_to_size, decompress, info
from .format import FORMAT_VERSION, FormatError
from .image import AecodecWarning, ImageError
from .weights import WeightsError

__version__ = "0.1.0"

__all__ = [
    "compress",
    "compress_to_size",
    "decompress",
    "info",
    "QUALITIES",
    "DEFAULT_QUALITY",
    "MAX_PIXELS",
    "FORMAT_VERSION",
    "FormatError",
    "ImageError",
    "AecodecWarning",
    "WeightsError",
    "SizeError",
    "__version__",
]

from . import pil_plugin as _pil_plugin  # noqa: E402

_pil_plugin.register()
