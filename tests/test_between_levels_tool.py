"""tools/between_levels.py: distance of between-level points from the curve through the levels."""

import json

import numpy as np

from conftest import load_tool

tool = load_tool("between_levels")


def test_distances_from_the_curve_and_the_chord(tmp_path, capsys):
    bpp = [0.2, 0.4, 0.8, 1.6]
    psnr = [28.0, 31.0, 34.0, 37.0]  # a straight line in log rate: PCHIP and chords agree
    ms = [0.9, 0.95, 0.975, 0.99]
    levels = {"quality": [1, 2, 3, 4], "bpp": bpp, "psnr-rgb": psnr, "ms-ssim-rgb": ms}
    mid = float(np.sqrt(0.4 * 0.8))  # halfway between levels 2 and 3 in log rate: 32.5 dB on the line
    between = {"quality": [2.5, 3.5, 4.5], "bpp": [mid, float(np.sqrt(0.8 * 1.6)), 3.0],
               "psnr-rgb": [32.6, 35.5, 40.0], "ms-ssim-rgb": [0.96, 0.98, 0.995]}
    rows = tool.rows(levels, between)
    assert [r[0] for r in rows] == [2.5, 3.5]  # 4.5 lies beyond the levels' rates: left out
    v, curve, chord = rows[0][2]["PSNR"]
    assert v == 32.6 and abs(curve - 0.1) < 1e-9 and abs(chord - 0.1) < 1e-9
    assert abs(rows[1][2]["PSNR"][1]) < 1e-9
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"results": levels}))
    b.write_text(json.dumps({"results": between}))
    assert tool.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| 2.5 | 0.5657 | 32.600 | +0.100 | +0.100 |" in out and "largest distance from the curve: 0.100 dB PSNR" in out
