import subprocess
import sys

import numpy as np
import pytest

import aecodec


def test_public_names():
    assert aecodec.QUALITIES == tuple(range(1, 9))
    assert aecodec.DEFAULT_QUALITY in aecodec.QUALITIES
    assert issubclass(aecodec.FormatError, ValueError)


@pytest.mark.parametrize("q", [0, 9, 999, -1, 2.5, "3", True, None])
def test_bad_quality_raises_valueerror(q):
    with pytest.raises(ValueError):
        aecodec.compress(np.zeros((8, 8, 3), np.uint8), quality=q)


def test_bad_inputs():
    with pytest.raises(TypeError):
        aecodec.compress("photo.png")
    with pytest.raises(ValueError):
        aecodec.compress(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(aecodec.FormatError):
        aecodec.decompress(b"definitely not an aec file")
    with pytest.raises(TypeError):
        aecodec.decompress("x.aec")


def test_import_is_light():
    """import aecodec (and the CLI module) must not pull torch or compressai."""
    code = "import sys, aecodec, aecodec.cli; print('torch' in sys.modules, 'compressai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
