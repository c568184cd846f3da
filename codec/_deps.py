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
used here, are left hollow).  ``scipy.stats`` (0.9 s) and ``pandas`` (0.16 s)
get the same treatment: compressai needs scipy.stats only when it builds CDF
tables (``update()``, at export), and its module's ``scipy`` is then a small
proxy that imports the real scipy.stats on first use.  If that import fails for any
reason, the real one is done instead.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types

# Imported by compressai at top level, never used by aecodec's coding: torch_geometric (point-cloud
# datasets, 2.5 s with torch._dynamo), scipy.stats (0.9 s; compressai calls scipy.stats.norm.ppf only
# when it builds CDF tables, at export) and pandas (0.16 s, point-cloud datasets).
_HOLLOW = ("torch_geometric", "scipy.stats", "pandas")


class _Anything:
    """Stands in for any name of a hollow module: a base class, a type, a decorator factory."""

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
    def __init__(self, names):
        self.names = tuple(names)

    def find_spec(self, name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in self.names):
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
        module = sys.modules.pop(name)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and getattr(sys.modules[parent], child, None) is module:
            delattr(sys.modules[parent], child)  # e.g. scipy.stats: scipy's own lazy loader brings the real one


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


class _LazyScipy:
    """compressai's module-level ``scipy``: ``.stats`` imports the real scipy.stats when first
    used (at export), whatever the scipy version (older ones have no lazy submodules)."""

    def __getattr__(self, name):
        import importlib

        if name == "stats":
            return importlib.import_module("scipy.stats")
        return getattr(importlib.import_module("scipy"), name)


def _import_compressai():
    hollow = [h for h in _HOLLOW if h not in sys.modules]  # what the process already has is used as it is
    if hollow:
        finder = _HollowFinder(hollow)
        sys.meta_path.insert(0, finder)
        try:
            import compressai

            em = sys.modules.get("compressai.entropy_models.entropy_models")
            if "scipy.stats" in hollow and em is not None and hasattr(em, "scipy"):
                em.scipy = _LazyScipy()
            return compressai
        except Exception:
            _forget(["compressai"])
        finally:
            sys.meta_path.remove(finder)
            _forget(hollow)
    import compressai

    return compressai
