import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.png"
KODAK = Path(os.environ.get("AECODEC_KODAK", ROOT.parent / "shared" / "data" / "kodak"))


@pytest.fixture(scope="session")
def sample_image():
    return Image.open(SAMPLE).convert("RGB")


def _crops():
    """Two 256x256 crops of real photos: kodim23 and kodim05 when the Kodak set is present,
    else two different regions of the bundled sample."""
    paths = [KODAK / "kodim23.png", KODAK / "kodim05.png"]
    if all(p.exists() for p in paths):
        regions = [(p, 0.5) for p in paths]
    else:
        regions = [(SAMPLE, 0.3), (SAMPLE, 0.7)]
    out = []
    for p, fx in regions:
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[:2]
        t, l = (h - 256) // 2, int((w - 256) * fx)
        out.append(a[t:t + 256, l:l + 256].copy())
    return out


@pytest.fixture(scope="session")
def photo_crops():
    return _crops()


def psnr(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


def load_tool(name: str):
    """A script of tools/ as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shipped_weights_file() -> Path:
    """The weights file of the default model."""
    from aecodec.weights import read_manifest, weights_dir

    m = read_manifest()
    return weights_dir() / m["models"][m["default"]]["file"]
