"""compressai is imported without torch_geometric's 2.5 s, and nothing is left behind."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import sys
import numpy as np
import aecodec
from aecodec._deps import import_compressai
import_compressai()
assert "torch_geometric" not in sys.modules, "stand-ins left in sys.modules"
assert "torch._dynamo" not in sys.modules, "torch_geometric's dynamo import still paid"
assert "scipy.stats" not in sys.modules and "pandas" not in sys.modules, "scipy.stats / pandas imported or left hollow"
try:  # a torchvision that fails to import (the CPU torch's pairing here) is not left hollow
    import torchvision
except Exception:
    assert "torchvision" not in sys.modules
else:
    assert hasattr(torchvision, "__version__"), "a hollow torchvision stand-in was left in sys.modules"
img = (np.arange(24 * 40 * 3) % 251).astype(np.uint8).reshape(24, 40, 3)
assert aecodec.decompress(aecodec.compress(img, quality=1)).size == (40, 24)
try:
    import torch_geometric.transforms as T
except ImportError:
    print("no torch_geometric installed")
else:
    assert isinstance(T.BaseTransform, type) and T.BaseTransform.__module__.startswith("torch_geometric")
# compressai builds CDF tables (export) with scipy.stats.norm.ppf: the real one, loaded then,
# also with a scipy that has no lazy submodules (before 1.9; the GPU machine's is unknown)
import scipy
if "__getattr__" in vars(scipy):
    del scipy.__getattr__
import torch
from compressai.entropy_models import GaussianConditional
g = GaussianConditional(None)
g.update_scale_table(torch.tensor([0.11, 1.0, 10.0]), force=True)
assert g._quantized_cdf.shape[0] == 3 and "scipy.stats" in sys.modules
import scipy.stats, pandas
assert abs(scipy.stats.norm.ppf(0.5)) < 1e-12 and hasattr(pandas, "DataFrame")
print("ok")
"""


def test_compressai_imports_without_torch_geometric_and_a_real_import_still_works():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ok" in r.stdout


def test_an_already_imported_torch_geometric_is_used():
    tg = pytest.importorskip("torch_geometric")  # noqa: F841
    code = ("import torch_geometric, sys; from aecodec._deps import import_compressai; c = import_compressai();"
            "import compressai.registry.transforms as R; assert R.torch_geometric is sys.modules['torch_geometric'];"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_a_failing_hollow_import_falls_back_to_the_real_one():
    pytest.importorskip("torch_geometric")
    code = ("import aecodec._deps as D\n"
            "def boom(self, name): raise AttributeError(name)\n"
            "D._HollowModule.__getattr__ = boom\n"
            "c = D.import_compressai()\n"
            "import sys; assert 'torch_geometric' in sys.modules and hasattr(c, 'entropy_models')\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
