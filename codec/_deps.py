"""Importing compressai safely.

``import compressai`` imports ``torchvision.transforms`` at top level for its
transform registry, which aecodec never uses.  The only torchvision that pip
pairs with the CPU build of torch 2.13 fails at import time ("operator
torchvision::nms does not exist").  When (and only when) the real torchvision
cannot be imported, empty stand-in modules are installed so that compressai
imports and works fully.
"""

from __future__ import annotations

import sys
import types


def _stub_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    tv = types.ModuleType("torchvision")
    tv.__path__ = []  # mark as a package
    tv_transforms = types.ModuleType("torchvision.transforms")
    tv.transforms = tv_transforms
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tv_transforms


def import_compressai():
    """Return the compressai module, working around a broken torchvision."""
    if "compressai" in sys.modules:
        return sys.modules["compressai"]
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # RuntimeError from a CUDA-only torchvision, or ImportError
        _stub_torchvision()
    import compressai

    return compressai
