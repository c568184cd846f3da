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


def test_pixel_limits_are_parameters():
    x = np.zeros((40, 30, 3), np.uint8)
    with pytest.raises(aecodec.ImageError, match="limit"):
        aecodec.compress(x, quality=1, max_pixels=1000)
    data = aecodec.compress(x, quality=1, max_pixels=1200)
    with pytest.raises(aecodec.FormatError, match="limit"):
        aecodec.decompress(data, max_pixels=1000)
    assert aecodec.decompress(data, max_pixels=None).size == (30, 40)
    assert aecodec.MAX_PIXELS == 2**27


def test_changes_on_the_way_in_are_warnings():
    from PIL import Image

    im = Image.new("CMYK", (8, 8), (10, 20, 30, 0))
    with pytest.warns(aecodec.AecodecWarning, match="CMYK"):
        aecodec.compress(im, quality=1)


def test_decompress_precision_option():
    data = aecodec.compress(np.full((16, 16, 3), 100, np.uint8), quality=2)
    a = np.asarray(aecodec.decompress(data, precision="float64")).astype(int)
    b = np.asarray(aecodec.decompress(data)).astype(int)
    assert np.abs(a - b).max() <= 1
    with pytest.raises(ValueError):
        aecodec.decompress(data, precision="half")


def test_shipped_weights_meet_the_release_bar_on_kodim23(tmp_path):
    """The README's promise: kodim23 through the command line at the default quality is above 30 dB."""
    from click.testing import CliRunner
    from PIL import Image

    from aecodec.cli import main
    from conftest import KODAK, psnr

    src = KODAK / "kodim23.png"
    if not src.exists():
        pytest.skip("Kodak set not available")
    r = CliRunner().invoke(main, ["compress", str(src), "-o", str(tmp_path / "k.aec")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["decompress", str(tmp_path / "k.aec"), "-o", str(tmp_path / "k.png")])
    assert r.exit_code == 0, r.output
    a = np.asarray(Image.open(src).convert("RGB"))
    b = np.asarray(Image.open(tmp_path / "k.png").convert("RGB"))
    bpp = 8 * (tmp_path / "k.aec").stat().st_size / (a.shape[0] * a.shape[1])
    assert psnr(a, b) > 30.0 and bpp < 2.0, (psnr(a, b), bpp)
