"""Importing compressai safely, and without its point-cloud baggage.

``import compressai`` imports ``torchvision.transforms`` at top level for its
transform registry, which aecodec never uses.  The only torchvision that pip
pairs with the CPU build of torch 2.13 fails at import time ("operator
torchvision::nms does not exist").  When (and only when) the real torchvision
cannot be imported, empty stand-in modules are installed so that compressai
imports and works fully, and removed from ``sys.modules`` afterwards.

compressai 1.2.8 also imports ``torch_geometric`` at top level (point-cloud
datasets and transforms), which imports ``torch._dynamo``: about 2.5 s of a
5 s import, on the path of every ``aecodec compress``.  Unless the process has
already imported torch_geometric, compressai is imported with stand-ins for it,
which are removed from ``sys.modules`` afterwards (a later real import of
torch_geometric works normally; only compressai's point-cloud classes, never
used here, are left hollow).  If that import fails for any reason, the real
one is done instead.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types

_HOLLOW = "torch_geometric"


class _Anything:
    """Stands in for any torch_geometric name: a base class, a type, a decorator factory."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and not kwargs else self


class _HollowModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


class _HollowFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == _HOLLOW or name.startswith(_HOLLOW + "."):
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _HollowModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def _forget(prefixes) -> None:
    for name in [m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in prefixes)]:
        del sys.modules[name]


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
        try:
            return _import_compressai()
        finally:  # the stand-ins served compressai only: a later ``import torchvision`` says what is wrong
            _forget(["torchvision"])
    return _import_compressai()


def _import_compressai():
    if _HOLLOW not in sys.modules:
        finder = _HollowFinder()
        sys.meta_path.insert(0, finder)
        try:
            import compressai

            return compressai
        except Exception:
            _forget(["compressai"])
        finally:
            sys.meta_path.remove(finder)
            _forget([_HOLLOW])
    import compressai

    return compressai
