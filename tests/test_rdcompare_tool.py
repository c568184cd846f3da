"""tools/rdcompare.py: the figures of a release, computed from benchmark results."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, load_tool

rdcompare = load_tool("rdcompare")


def _write(path, name, bpp, psnr, ms):
    path.write_text(json.dumps({"name": name, "results": {
        "quality": list(range(1, len(bpp) + 1)), "bpp": list(bpp), "psnr-rgb": list(psnr), "ms-ssim-rgb": list(ms)}}))


def _folder(tmp_path, scale):
    """An anchor curve and an aecodec curve that needs ``scale`` times its rate for the same quality."""
    d = tmp_path / "bench"
    d.mkdir()
    bpp = np.array([0.2, 0.4, 0.8, 1.6])
    psnr = np.array([28.0, 31.0, 34.0, 37.0])
    ms = np.array([0.92, 0.95, 0.975, 0.99])
    _write(d / "webp.json", "webp", bpp, psnr, ms)
    _write(d / "aecodec.json", "aecodec", bpp * scale, psnr, ms)
    per = d / "per-image"
    per.mkdir()
    per.joinpath("aecodec.jsonl").write_text(
        json.dumps({"image": "a.png", "quality": 2, "psnr_rgb": 31.5, "bpp": 0.41}) + "\n")
    return d


def test_a_curve_at_90_percent_of_the_rate_is_minus_10_percent(tmp_path):
    d = _folder(tmp_path, 0.9)
    doc = json.loads((d / "webp.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**doc, "name": "aecodec"}))  # the last release: the anchor
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "rdcompare.py"), str(d), "--anchors", "webp",
                          "--previous", str(tmp_path / "old.json"), "--image", "a.png", "--quality", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| webp | -10.0 % | -10.0 % |" in out.stdout
    assert "| previous release | -10.0 % | -10.0 % |" in out.stdout
    assert "a.png at quality 2: 31.50 dB at 0.410 bpp" in out.stdout
    # equal rate: at 0.9 x the anchor's rate aecodec has the anchor's PSNR, so the gap is positive
    gaps = [line for line in out.stdout.splitlines() if line.startswith("| webp |")][-1].strip("| ").split(" | ")[1:]
    assert gaps[0] == "–"  # 0.18 bpp is below the anchor's curve
    assert len(gaps) == 4 and all(float(v) > 0 for v in gaps[1:])


def test_equal_rate_gap_is_left_out_where_the_codec_has_no_curve(tmp_path):
    d = _folder(tmp_path, 0.5)  # aecodec's lowest rate, 0.1 bpp, is below the anchor's curve
    new = rdcompare.load_curve(d / "aecodec.json")
    anchor = rdcompare.load_curve(d / "webp.json")
    assert np.isnan(rdcompare.psnr_at_rate(anchor, 0.1))
    assert rdcompare.psnr_at_rate(anchor, 0.4) == pytest.approx(31.0)
    assert "| webp | – |" in rdcompare.report(new, {"webp": anchor})


def test_bad_inputs_are_one_line_errors(tmp_path):
    d = _folder(tmp_path, 1.0)
    tool = [sys.executable, str(ROOT / "tools" / "rdcompare.py")]
    r = subprocess.run(tool + [str(d), "--anchors", "heic"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no results for 'heic'" in r.stderr
    (d / "bad.json").write_text("{")
    r = subprocess.run(tool + [str(d / "bad.json")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is not a benchmark results file" in r.stderr and "Traceback" not in r.stderr


def test_no_bd_rate_from_too_few_points_or_unlike_grids(tmp_path):
    d = _folder(tmp_path, 0.9)
    new, anchor = rdcompare.load_curve(d / "aecodec.json"), rdcompare.load_curve(d / "webp.json")
    three = {k: (v[:3] if k not in ("name", "model") else v) for k, v in new.items()}
    text = rdcompare.report(three, {"webp": anchor}, previous=new)
    assert "| webp | – (3 points, needs 4) |" in text  # a figure three points cannot support: none
    # 3 levels against 4: compared on the 3 in common, which are too few for a BD-rate
    assert "| previous release (levels 1, 2, 3 in common) | – (3 points, needs 4) |" in text
    five = {**new, "bpp": np.append(new["bpp"], 3.2), "psnr": np.append(new["psnr"], 40.0),
            "ms": np.append(new["ms"], 0.995), "quality": new["quality"] + [5]}
    text = rdcompare.report(five, {"webp": anchor}, previous=new)  # the same weights, one more level
    assert "| previous release (levels 1, 2, 3, 4 in common) | +0.0 % | +0.0 % |" in text
    tool = [sys.executable, str(ROOT / "tools" / "rdcompare.py")]
    r = subprocess.run(tool + [str(d), "--anchors", "webp", "--previous", str(d / "webp.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "holds 'webp' results" in r.stderr and len(r.stderr.splitlines()) == 1
    r = subprocess.run(tool + [str(d), "--anchors", "webp", "--image", "nothere.png"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""  # the error comes before any table
    r = subprocess.run(tool + [str(d), "--anchors", "webp", "--quality", "3"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "give --image too" in r.stderr


def test_a_closed_pipe_ends_it_quietly():
    """`python tools/rdcompare.py ... | head -1`: no traceback when the reader has gone away
    (closed here before the tool prints anything, which it does only after reading its JSON)."""
    p = subprocess.Popen([sys.executable, str(ROOT / "tools" / "rdcompare.py"), str(ROOT / "benchmarks" / "kodak")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait()
    assert p.returncode == 141 and "Traceback" not in err, (p.returncode, err)


def test_a_bd_rate_over_a_small_part_of_the_curve_is_flagged(tmp_path):
    d = _folder(tmp_path, 1.0)
    new, anchor = rdcompare.load_curve(d / "aecodec.json"), rdcompare.load_curve(d / "webp.json")
    text = rdcompare.report(new, {"webp": anchor})
    assert "| webp | +0.0 % | +0.0 % |" in text and "webp PSNR 28.00–37.00 dB" in text
    shifted = {**new, "psnr": new["psnr"] + 7.0}  # 35..44 dB against 28..37: a third of aecodec's span
    text = rdcompare.report(shifted, {"webp": anchor})
    assert "| webp | " in text and "(overlap 22%)" in text and "(22% of aecodec's span)" in text


def test_results_of_other_weights_than_the_shipped_ones_are_named(tmp_path):
    from aecodec.weights import default_model_id

    d = _folder(tmp_path, 0.9)
    doc = json.loads((d / "aecodec.json").read_text())
    tool = [sys.executable, str(ROOT / "tools" / "rdcompare.py"), str(d), "--anchors", "webp"]
    for model, warned in (("msh-1x1-000000000000", True), (default_model_id(), False)):
        doc["meta"] = {"versions": {"aecodec model": model}}
        (d / "aecodec.json").write_text(json.dumps(doc))
        r = subprocess.run(tool, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "| webp | -10.0 % |" in r.stdout
        assert ("measured with msh-1x1-000000000000, not the shipped default" in r.stderr) == warned, r.stderr
