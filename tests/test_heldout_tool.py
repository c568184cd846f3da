"""tools/heldout.py: the held-out comparison of weights files used before a release."""

import subprocess
import sys

import numpy as np
from conftest import ROOT, load_tool, shipped_weights_file as _shipped
from PIL import Image

heldout = load_tool("heldout")


def _data(tmp_path):
    src = np.asarray(Image.open(ROOT / "samples" / "sample.png").convert("RGB"))
    d = tmp_path / "data"
    d.mkdir()
    for i in range(2):  # one held out (chosen by the hash of the name), one trained on
        Image.fromarray(np.ascontiguousarray(np.rot90(src, i))[:128, :128]).save(d / f"im{i}.png")
    return d


def test_same_weights_zero_bd_rate_and_a_damaged_copy_is_worse(tmp_path):
    from safetensors.torch import load_file, save_file
    from aecodec.weights import read_metadata

    w = _shipped()
    bad = tmp_path / "bad.safetensors"
    sd = load_file(w)
    k = "g_s.6.bias"  # the synthesis's last layer
    sd[k] = sd[k] + 0.01  # a decoder off by 1 % of full scale: same rate, lower PSNR, still monotonic
    save_file(sd, bad, metadata=read_metadata(w))
    rows = heldout.evaluate(_data(tmp_path), [w, w, bad], crop=128, train_images=1)
    assert rows[0][2] == 0 and abs(rows[1][2]) < 1e-9
    assert rows[0][3] > 0 and rows[0][3] == rows[1][3]  # the overfitting gap, deterministic too
    assert rows[1][1] == rows[0][1]  # deterministic
    assert rows[2][2] > 1.0  # the damaged decoder needs more rate for the same PSNR
    assert sum(rows[2][1]["loss"]) > sum(rows[0][1]["loss"])


def test_cli_missing_file_is_a_usage_error(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "heldout.py"), str(tmp_path), str(tmp_path / "nope.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no such weights file" in r.stderr and "Traceback" not in r.stderr


def test_cli_not_weights_is_a_one_line_data_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "heldout.py"), str(_data(tmp_path)), str(junk)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "junk.safetensors" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_checks_options_and_every_file_before_measuring(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "heldout.py")]
    d = _data(tmp_path)
    for bad in (["--crop", "0"], ["--crop", "100"], ["--val-images", "0"]):
        r = subprocess.run(tool + [str(d), str(_shipped()), *bad], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and bad[0] in r.stderr, r.stderr


def test_every_file_is_checked_before_the_first_is_measured(tmp_path, monkeypatch, capsys):
    import pytest

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")

    def no_validation(*a, **k):
        raise AssertionError("measured before every file was checked")

    monkeypatch.setattr(heldout, "_validate", no_validation)
    with pytest.raises(SystemExit) as e:
        heldout.main([str(_data(tmp_path)), str(_shipped()), str(junk)])
    assert e.value.code == 1 and "junk.safetensors" in capsys.readouterr().err
