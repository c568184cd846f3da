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
    """256x256 crops of real photos: two Kodak images when the test set is present, else the sample."""
    paths = [KODAK / "kodim23.png", KODAK / "kodim05.png"]
    paths = [p for p in paths if p.exists()] or [SAMPLE]
    out = []
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[:2]
        out.append(a[(h - 256) // 2:(h - 256) // 2 + 256, (w - 256) // 2:(w - 256) // 2 + 256].copy())
    return out


@pytest.fixture(scope="session")
def photo_crops():
    return _crops()


def psnr(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")
