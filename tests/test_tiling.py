"""Tiled transforms: exact margins, the same latents and bitstream as untiled, bounded memory."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import aecodec
from aecodec import coding, tiling
from aecodec.api import _pad
from aecodec.format import unpack
from aecodec.weights import load_model

from conftest import KODAK, psnr

ROOT = Path(__file__).resolve().parents[1]


def test_margins_from_layer_structure():
    from aecodec.model import GainedMeanScaleHyperprior, LinearGainedHyperprior

    m = GainedMeanScaleHyperprior(N=8, M=12)
    assert tiling.margin(m.g_a, 16, 1) == 2  # 4 convs k5 s2: 30 px before, 15 after
    assert tiling.margin(m.g_s, 1, 16) == 2
    assert tiling.margin(m.h_s, 1, 4) == 2
    lin = LinearGainedHyperprior(N=8, M=12)
    assert tiling.margin(lin.g_a, 16, 1) == 0 and tiling.margin(lin.g_s, 1, 16) == 0
    with pytest.raises(tiling.NotTileable):
        tiling.margin(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.MaxPool2d(2)), 2, 1)


@pytest.mark.parametrize("arch", ["msh", "linear"])
def test_tiled_equals_untiled_for_random_weights(arch):
    """With random weights and tiny tiles, every tile boundary is exercised: the stitched outputs
    equal the untiled ones up to float rounding (a wrong margin shows up as O(1) errors)."""
    from aecodec.model import GainedMeanScaleHyperprior, LinearGainedHyperprior

    torch.manual_seed(0)
    cls = GainedMeanScaleHyperprior if arch == "msh" else LinearGainedHyperprior
    m = cls(N=8, M=12).eval()
    x = (np.random.default_rng(0).random((192, 256, 3)) * 255).astype(np.uint8)
    g = torch.ones(1, 12, 1, 1)
    y_full, n_full = coding.analysis(m, x, g, tile=1000)
    y_tiled, n_tiled = coding.analysis(m, x, g, tile=3)
    assert n_full == 1 and n_tiled == 24
    assert (y_full - y_tiled).abs().max() < 1e-5 * max(1.0, float(y_full.abs().max()))
    y = y_full.round()
    a = coding.synthesis(m, y, 190, 250, tile=1000)
    b = coding.synthesis(m, y, 190, 250, tile=3)
    assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-3
    with torch.no_grad():
        ref = m.g_s(y).clamp(0, 1).mul(255).round()[0, :, :190, :250].permute(1, 2, 0).numpy()
    assert np.abs(a - ref).max() <= 1


def test_small_images_take_one_tile(photo_crops):
    model = load_model()
    x = _pad(photo_crops[0])
    g, _ = coding._gains(model, 3)
    _, n = coding.analysis(model, x, g)
    assert n == 1
    big = np.zeros((1100, 64, 3), np.uint8)
    _, n = coding.analysis(model, _pad(big), g)
    assert n == 2


def test_tiling_costs_no_rate_and_no_quality(photo_crops):
    """On a mid-size photo, coding with small tiles gives the same bitstream size and the same
    image (to a level on a few pixels) as coding in one piece."""
    path = KODAK / "kodim05.png"
    if path.exists():
        from PIL import Image

        img = np.asarray(Image.open(path).convert("RGB"))[:384, :512]
    else:
        img = np.tile(photo_crops[0], (2, 2, 1))[:384, :512]
    model = load_model()
    x = _pad(img)
    one = coding.encode(model, x, 4, tile=1000)
    many = coding.encode(model, x, 4, tile=8)
    assert many.tiles == 12 and one.tiles == 1
    size_one = len(one.y_string) + len(one.z_string) + len(one.guard)
    size_many = len(many.y_string) + len(many.z_string) + len(many.guard)
    assert abs(size_many - size_one) <= 0.001 * size_one + 8
    out_one = coding.decode(model, one.z_string, one.y_string, one.guard, one.z_shape, 4, 384, 512, tile=1000)
    out_many = coding.decode(model, many.z_string, many.y_string, many.guard, many.z_shape, 4, 384, 512, tile=8)
    assert abs(psnr(img, out_one) - psnr(img, out_many)) < 0.01
    assert np.abs(out_one.astype(int) - out_many).max() <= 1


def test_tiled_decode_deterministic_across_threads(tmp_path, photo_crops):
    """Tiles come from the image size alone: a tiled decode is bit-exact for 1 and 2 threads."""
    data = aecodec.compress(np.tile(photo_crops[0], (1, 5, 1))[:200, :1100], quality=3)
    assert unpack(data).header.y_shape[1] > tiling.TILE  # two tiles wide
    (tmp_path / "t.aec").write_bytes(data)
    code = ("import sys, hashlib, torch; torch.set_num_threads(int(sys.argv[1])); import aecodec; "
            "print(hashlib.sha256(aecodec.decompress(open(sys.argv[2], 'rb').read()).tobytes()).hexdigest())")
    outs = [subprocess.run([sys.executable, "-c", code, str(t), str(tmp_path / "t.aec")], capture_output=True,
                           text=True, check=True, timeout=600).stdout.strip() for t in (1, 2)]
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_24_megapixels_within_3_gb(tmp_path):
    """6000x4000 (a Kodak mosaic): compress and decompress each peak under 3 GB RSS, process tree
    included (the main process and the entropy-decoder worker)."""
    if not KODAK.exists():
        pytest.skip("needs the Kodak images for the mosaic")
    big = tmp_path / "big.png"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_big_image.py"), "6000", "4000", str(big)], check=True)
    cli = [sys.executable, "-c", "from aecodec.cli import main; main()"]
    peak = [sys.executable, str(ROOT / "tools" / "peak_rss.py"), "--json", "--"]
    import json

    res = {}
    for name, args in (("compress", ["compress", str(big), "-o", str(tmp_path / "big.aec"), "-q", "5"]),
                       ("decompress", ["decompress", str(tmp_path / "big.aec"), "-o", str(tmp_path / "back.png")])):
        r = subprocess.run(peak + cli + args, capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, r.stderr[-2000:]
        res[name] = json.loads(r.stdout.strip().splitlines()[-1])
        print(name, res[name])
        assert res[name]["peak_rss_process_tree_MiB"] < 3 * 1024
    from PIL import Image

    assert Image.open(tmp_path / "back.png").size == (6000, 4000)
