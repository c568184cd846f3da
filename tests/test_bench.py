"""aecodec bench: BD-rate against hand-computed cases, metrics, codec settings against the
independently measured anchors, and the whole command on two small crops."""

import csv
import json
import math
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import aecodec
from aecodec import bench as B
from aecodec.bdrate import bd_rate, bd_rate_details, msssim_db
from aecodec.cli.bench import bench

from conftest import KODAK, ROOT

MEASURED = ROOT.parent / "shared" / "anchors" / "kodak-measured"


# --- BD-rate ---------------------------------------------------------------


def test_bd_rate_of_rates_scaled_by_0_8_is_minus_20_percent():
    psnr = [26.0, 28.5, 31.0, 33.7, 36.2, 38.9]
    rate = [0.11, 0.24, 0.43, 0.78, 1.32, 2.05]
    r = bd_rate_details(rate, psnr, [0.8 * x for x in rate], psnr)
    assert r.rate == pytest.approx(-20.0, abs=0.01)
    assert (r.lo, r.hi) == (26.0, 38.9)
    # and the other way round: 1 / 0.8 = +25 %
    assert bd_rate([0.8 * x for x in rate], psnr, rate, psnr) == pytest.approx(25.0, abs=0.01)


def test_bd_rate_hand_computed_cases():
    # two points each: PCHIP is the straight line through them in (quality, ln rate).
    # anchor ln R = (D - 30)/10 * ln 4 on [30, 40]; test ln R = (D - 30)/10 * ln 16.
    # difference (D - 30)/10 * ln 4, whose mean over [30, 40] is ln 2: +100 %.
    assert bd_rate([1, 4], [30, 40], [1, 16], [30, 40]) == pytest.approx(100.0, abs=1e-9)
    # test ln R = ln 3 + (D - 35)/10 * ln 4 on [35, 45]: overlap [35, 40], difference ln 1.5: +50 %
    r = bd_rate_details([1, 4], [30, 40], [3, 12], [35, 45])
    assert r.rate == pytest.approx(50.0, abs=1e-9)
    assert (r.lo, r.hi) == (35, 40)
    assert r.test_bpp == pytest.approx((3.0, 6.0))
    assert r.anchor_fraction == pytest.approx(0.5) and r.test_fraction == pytest.approx(0.5)
    # each fraction is of its own curve's span: the test's 32-36 lies inside the anchor's 30-40
    r = bd_rate_details([1, 2, 3, 4], [30, 33, 36, 40], [1, 2, 3, 4], [32, 33, 34, 36])
    assert r.anchor_fraction == pytest.approx(0.4) and r.test_fraction == pytest.approx(1.0)
    # a point of zero rate (a failed measurement) is left out, not a NaN
    assert bd_rate([0, 1, 4], [20, 30, 40], [1, 16], [30, 40]) == pytest.approx(100.0, abs=1e-9)
    # unsorted input and a repeated quality are handled; no overlap gives no number
    assert bd_rate([4, 1], [40, 30], [16, 1, 1], [40, 30, 30]) == pytest.approx(100.0, abs=1e-9)
    assert bd_rate_details([1, 4], [30, 40], [1, 2], [41, 45]) is None
    assert math.isnan(bd_rate([1], [30], [1, 2], [30, 40]))


def test_msssim_db():
    assert msssim_db([0.9, 0.99]) == pytest.approx([10.0, 20.0])


@pytest.mark.skipif(not MEASURED.is_dir(), reason="shared/anchors/kodak-measured not present")
def test_bd_rate_agrees_with_the_measured_anchor_tables():
    """The anchors' bd_tables were made by another implementation (PCHIP too)."""

    def load(name):
        return json.loads((MEASURED / f"{name}.json").read_text())["results"]

    jpeg, heic, avif, jxl = (load(n) for n in ("jpeg-420", "heic-444", "avif-444", "jxl"))
    r = bd_rate_details(jpeg["bpp"], jpeg["psnr-rgb"], avif["bpp"], avif["psnr-rgb"])
    assert r.rate == pytest.approx(-48.8, abs=0.05) and (round(r.lo, 2), round(r.hi, 2)) == (26.02, 38.03)
    assert bd_rate(heic["bpp"], heic["psnr-rgb"], jxl["bpp"], jxl["psnr-rgb"]) == pytest.approx(41.3, abs=0.05)
    assert bd_rate(jpeg["bpp"], msssim_db(jpeg["ms-ssim-rgb"]), avif["bpp"],
                   msssim_db(avif["ms-ssim-rgb"])) == pytest.approx(-48.4, abs=0.05)


# --- metrics and helpers ------------------------------------------------------


def test_psnr_and_msssim():
    a = np.full((200, 180, 3), 100, np.uint8)
    b = a.copy()
    b[..., 0] = 103  # MSE = 9 / 3 = 3
    assert B.psnr_rgb(a, b) == pytest.approx(10 * math.log10(255**2 / 3))
    assert B.psnr_rgb(a, a) == math.inf
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (170, 200, 3), dtype=np.uint8)
    assert B.ms_ssim_rgb(x, x) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
    assert 0 < B.ms_ssim_rgb(x, noisy) < 0.99
    assert math.isnan(B.ms_ssim_rgb(x[:160], x[:160]))  # under 161 px: not computed


def test_thin_grid_and_parse():
    g = (3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 85, 90)
    assert B.thin_grid(g, 3) == (3, 40, 90)
    assert B.thin_grid(g, 2) == (3, 90)
    assert B.thin_grid(g, 50) == g
    assert B.parse_grid("jpeg-420=10,50") == ("jpeg-420", (10, 50))
    assert B.parse_grid("jpeg2000=24,9.6") == ("jpeg2000", (24.0, 9.6))
    assert B.parse_grid("aecodec=1,5.5,6.25,8") == ("aecodec", (1, 5.5, 6.25, 8))  # between levels too
    assert [type(q) for q in B.parse_grid("aecodec=2.0,2.5")[1]] == [int, float]
    for bad in ("jpeg-420", "nope=1", "aecodec=0,3", "aecodec=8.5", "aecodec=5.555", "jpeg-420=a", "jpeg-420=2.5"):
        with pytest.raises(B.BenchUsageError):
            B.parse_grid(bad)
    with pytest.raises(B.BenchUsageError):
        B.parse_codecs("jpeg-420,bpg")


def test_scaled_image_is_mirror_tiled(photo_crops):
    src = photo_crops[0]
    big = B.scaled_image(src, 0.25)
    assert big.shape == (400, 608, 3)
    assert np.array_equal(big[:256, :256], src)
    assert np.array_equal(big[256:400, :256], src[::-1][:144])  # reflected, not resampled


def test_store_skips_a_line_cut_short(tmp_path):
    p = tmp_path / "x.jsonl"
    good = {"key": "k", "image_sha": "s", "quality": 5, "image": "a.png", "bytes": 1}
    p.write_text(json.dumps(good) + "\n" + '{"key": "k", "image_sha": "t", "qual')
    s = B.Store(p)
    assert list(s.index("k")) == [("s", repr(5.0))]
    assert s.index("other") == {}


def test_bench_reads_16_bit_grey_as_compress_does(tmp_path):
    """Every codec is measured on the pixels aecodec compress would code: a 16-bit grey PNG is
    reduced to the nearest 8-bit level (convert("RGB") clipped it to white: 66 dB for any codec)."""
    g = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 17 % 65536).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "deep.png")
    rgb = B.load_rgb(tmp_path / "deep.png")
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[:, :, 1], np.round(g / 257.0).astype(np.uint8))


def test_results_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A bench stopped while writing (here: the disk fills half-way) leaves the previous
    RESULTS.md (or JSON) as it was and no temporary file behind."""
    p = tmp_path / "RESULTS.md"
    p.write_text("previous results\n")
    real_write = type(p).write_text

    def half_then_full(self, text, *a, **k):
        real_write(self, text[: len(text) // 2], *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(p), "write_text", half_then_full)
    with pytest.raises(OSError):
        B._write_text(p, "new results, long enough to be cut in half\n")
    monkeypatch.undo()
    assert p.read_text() == "previous results\n"
    assert [q.name for q in tmp_path.iterdir()] == ["RESULTS.md"]
    B._write_text(p, "new\n")
    assert p.read_text() == "new\n" and [q.name for q in tmp_path.iterdir()] == ["RESULTS.md"]


def test_time_process_reports_peak_rss():
    r = B.time_process([sys.executable, "-c", "x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096])"],
                       runs=1)
    assert r["peak_rss_mib"] > 300 and r["median_s"] > 0
    with pytest.raises(B.BenchError):
        B.time_process([sys.executable, "-c", "raise SystemExit(3)"], runs=1)


# --- codec settings reproduce the measured anchors ------------------------------


@pytest.mark.parametrize("name,quality", [("jpeg-420", 50), ("jpeg-444", 10), ("webp", 50), ("avif-444", 60),
                                          ("heic-444", 40), ("jxl", 50), ("jpeg2000", 60.0)])
def test_codec_reproduces_measured_anchor(name, quality):
    """Same settings as the measured anchors: the same bytes, the same PSNR (and, once, MS-SSIM)."""
    csv_path = MEASURED / "per-image" / f"{name}.csv"
    if not csv_path.exists() or not (KODAK / "kodim23.png").exists():
        pytest.skip("measured anchors or Kodak not present")
    codec = B.get_codec(name)
    if codec.available():
        pytest.skip(codec.available())
    with csv_path.open() as f:
        ref = next(r for r in csv.DictReader(f) if r["image"] == "kodim23.png" and float(r["quality"]) == quality)
    rgb = B.load_rgb(KODAK / "kodim23.png")
    codec = B.get_codec(name, ready=True)
    if name == "jpeg-420":  # the full measurement, MS-SSIM included (0.5 s on a Kodak image)
        row = B.measure_point(codec, rgb, quality)
        assert row["ms_ssim"] == pytest.approx(float(ref["ms_ssim"]), abs=2e-6)
        data_len, psnr = row["bytes"], row["psnr_rgb"]
    else:
        data = codec.encode(codec.prepare(rgb), quality)
        data_len, psnr = len(data), B.psnr_rgb(rgb, codec.decode(data))
    assert data_len == int(ref["bytes"])
    assert psnr == pytest.approx(float(ref["psnr_rgb"]), abs=1e-3)


# --- the command ---------------------------------------------------------------


@pytest.fixture()
def crops_dir(tmp_path, photo_crops):
    d = tmp_path / "crops"
    d.mkdir()
    for i, c in enumerate(photo_crops[:2]):
        Image.fromarray(c).save(d / f"crop{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _run(*args):
    return CliRunner().invoke(bench, [str(a) for a in args], catch_exceptions=False)


def test_bench_end_to_end_and_resume(crops_dir, tmp_path, photo_crops):
    out = tmp_path / "out"
    readme = tmp_path / "README.md"  # OUT/../README.md: its marked section is refreshed
    readme.write_text(f"# x\nbefore\n{B.README_START}\nold\n{B.README_END}\nafter\n")
    args = [crops_dir, "--codecs", "aecodec,jpeg-420,webp", "--points", "4", "--grid", "aecodec=2,6", "--jobs", "1",
            "--scaling-sizes", "none", "--no-coldstart", "--no-reference", "-o", out, "--quiet"]
    r = _run(*args)
    assert r.exit_code == 0, r.output
    assert "20 points measured, 0 reused" in r.output
    n_images = len(photo_crops[:2])

    from aecodec._deps import import_compressai

    import_compressai()
    from compressai.utils.plot.__main__ import parse_json_file

    grids = {"aecodec": [2, 6], "jpeg-420": [3, 20, 60, 90], "webp": [0, 30, 70, 95]}
    for name, grid in grids.items():
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["name"] == name and doc["description"]
        res = doc["results"]
        assert res["quality"] == grid
        for k in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"):
            assert len(res[k]) == len(grid) and all(isinstance(v, float) and v > 0 for v in res[k]), k
        assert res["bpp"] == sorted(res["bpp"])
        for metric in ("psnr", "ms-ssim"):  # CompressAI's own plotting reads the file
            parsed = parse_json_file(out / f"{name}.json", metric)
            assert len(parsed["xs"]) == len(grid)
        rows = [json.loads(line) for line in (out / "per-image" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == n_images * len(grid)

    # bpp comes from the real file: the stored size is what aecodec.compress writes
    rows = [json.loads(line) for line in (out / "per-image" / "aecodec.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["image"] == "crop0.png" and r["quality"] == 6)
    data = aecodec.compress(photo_crops[0], quality=6)
    assert row["bytes"] == len(data) and row["bpp"] == pytest.approx(8 * len(data) / 256**2)
    assert row["key"] == B.get_codec("aecodec").key()
    # and PSNR is that of the decoded picture
    jrow = next(json.loads(line) for line in (out / "per-image" / "jpeg-420.jsonl").read_text().splitlines()
                if '"crop1.png"' in line and '"quality": 20' in line)
    buf = __import__("io").BytesIO()
    Image.fromarray(photo_crops[-1]).save(buf, format="JPEG", quality=20, subsampling=2, optimize=True)
    dec = np.asarray(Image.open(buf).convert("RGB"))
    assert jrow["bytes"] == buf.tell() and jrow["psnr_rgb"] == pytest.approx(B.psnr_rgb(photo_crops[-1], dec))

    for png in ("rd-psnr.png", "rd-msssim-db.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 400
    md = (out / "RESULTS.md").read_text()
    assert "PCHIP" in md and "2 images" in md and "libjpeg-turbo" in md
    m = re.search(r"\| webp \| measured \| ([+-]\d+\.\d) % \[(\d+\.\d+)–(\d+\.\d+) dB", md)
    assert m, md
    # aecodec has 2 points here: no BD-rate is claimed from them (4 per curve at least)
    assert "| aecodec | measured | – (2 points, needs 4) | – (2 points, needs 4) |" in md
    summary = json.loads((out / "meta" / "summary.json").read_text())
    assert summary["bd_rate"]["psnr-rgb"]["aecodec"]["jpeg-420"] is None
    bd = summary["bd_rate"]["psnr-rgb"]["webp"]["jpeg-420"]
    assert bd["bd_rate"] == pytest.approx(float(m.group(1)), abs=0.05) and bd["bd_rate"] < 0
    assert summary["speed"]["aecodec"]["points"] == n_images * 2
    mem = [r["enc_mem_mib"] for r in rows if r.get("enc_mem_mib") is not None]  # the peak, not a mean
    assert summary["speed"]["aecodec"]["enc_mem_mib"] == pytest.approx(max(mem))
    per_level = json.loads((out / "aecodec.json").read_text())["results"]["encoding_mem_mib"]
    for q, got in zip(grids["aecodec"], per_level):  # each level's too: the largest over the images
        assert got == pytest.approx(max(r["enc_mem_mib"] for r in rows if r["quality"] == q))
    text = readme.read_text()
    assert "old" not in text and text.startswith("# x\nbefore\n") and text.endswith(f"{B.README_END}\nafter\n")
    assert "(out/rd-psnr.png)" in text and "| webp | measured |" in text

    # a second run reuses every point and measures nothing
    before = (out / "per-image" / "webp.jsonl").read_text()
    r = _run(*args)
    assert r.exit_code == 0 and "0 points measured, 20 reused" in r.output
    assert (out / "per-image" / "webp.jsonl").read_text() == before
    # a new grid point is the only thing measured
    r = _run(*args, "--grid", "jpeg-420=3,40,60,90")
    assert r.exit_code == 0 and "2 points measured, 18 reused" in r.output
    assert json.loads((out / "jpeg-420.json").read_text())["results"]["quality"] == [3, 40, 60, 90]
    # a rebuilt report measures nothing and keeps the measuring run's machine state (load average)
    summary = json.loads((out / "meta" / "summary.json").read_text())
    summary["machine"]["load average at start"] = "9.99 9.99 9.99"
    (out / "meta" / "summary.json").write_text(json.dumps(summary))
    r = _run(*args, "--grid", "jpeg-420=3,40,60,90", "--report-only")
    assert r.exit_code == 0 and "0 points measured" in r.output
    assert "load average at start 9.99 9.99 9.99" in (out / "RESULTS.md").read_text()


def test_bench_parallel_workers_and_size_table(tmp_path, photo_crops):
    """Two worker processes; images too small for MS-SSIM (null in the JSON, and no torch in the workers)."""
    small = tmp_path / "small"
    small.mkdir()
    for i, c in enumerate(photo_crops[:2]):
        Image.fromarray(c[:128, :144]).save(small / f"s{i}.png")
    out = tmp_path / "out"
    r = _run(small, "--codecs", "jpeg-420,webp", "--points", "2", "--jobs", "2", "--scaling-sizes", "0.02,0.05",
             "--scaling-codecs", "jpeg-420", "--no-coldstart", "--no-reference", "-o", out, "--quiet")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (out / "per-image" / "webp.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["jobs"] == 2 and r["ms_ssim"] is None for r in rows)
    doc = json.loads((out / "webp.json").read_text())
    assert doc["results"]["ms-ssim-rgb"] == [None, None] and len(doc["results"]["psnr-rgb"]) == 2
    scaling = [json.loads(line) for line in (out / "meta" / "scaling.jsonl").read_text().splitlines()]
    assert sorted((s["width"], s["height"]) for s in scaling) == [(176, 112), (272, 176)]
    assert all(s["enc_s"] > 0 and s["dec_s"] > 0 and s["enc_peak_rss_mib"] > 10 for s in scaling)
    md = (out / "RESULTS.md").read_text()
    assert "### Against image size" in md and "MS-SSIM is not computed for 2 image(s)" in md


def test_bench_usage_and_data_errors(tmp_path, crops_dir):
    import aecodec.cli.bench as cli_bench

    assert cli_bench._DEFAULT_CODECS == ",".join(B.DEFAULT_CODECS)  # the help text's copy
    r = _run(crops_dir, "--codecs", "jpeg-420,bpg", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "unknown codec 'bpg'" in r.output
    r = _run(crops_dir, "--grid", "jpeg-420", "-o", tmp_path / "o")
    assert r.exit_code == 2
    for grid, why in (("jpeg-420=101,200", "0..100"), ("jpeg-420=-5,10", "0..100"), ("jpeg-420=1,,2", "empty"),
                      ("jpeg-420=50,50", "twice"), ("webp=10,20", "not among")):
        r = _run(crops_dir, "--codecs", "jpeg-420", "--grid", grid, "-o", tmp_path / "o")
        assert r.exit_code == 2 and why in r.output and len(r.output.splitlines()) == 1, r.output
    assert not (tmp_path / "o").exists()
    r = _run(tmp_path / "missing", "-o", tmp_path / "o")
    assert r.exit_code == 1 and "no such directory" in r.output
    (tmp_path / "k1.png").write_bytes(b"x")
    r = _run(tmp_path / "k1.png", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "a folder of images" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run(empty, "--codecs", "jpeg-420", "-o", tmp_path / "o", "--no-coldstart", "--scaling-sizes", "none")
    assert r.exit_code == 1 and "no images" in r.output


def test_list_images_says_what_it_leaves_out(tmp_path, crops_dir):
    """Only lossless sources are measured; a JPEG, another file or a subfolder is not silently
    dropped: one line names them."""
    import shutil

    d = tmp_path / "mixed"
    shutil.copytree(crops_dir, d, ignore=shutil.ignore_patterns("*.txt"))
    Image.new("RGB", (32, 32)).save(d / "phone.jpg")
    (d / "notes.txt").write_text("x")
    (d / "sub").mkdir()
    said = []
    items = B.list_images(d, said.append)
    assert [i.name for i in items] == [i.name for i in B.list_images(crops_dir)]
    (d / ".DS_Store").write_bytes(b"x")  # hidden files: not mentioned
    said.clear()
    B.list_images(d, said.append)
    assert said == [f"{d}: left out 1 image in a format that is usually lossy (phone.jpg: a lossy source is no "
                    "reference; convert to PNG to include it); 1 other file (notes.txt); 1 folder (sub: not searched)"]
    said.clear()
    (d / "phone.jpg").unlink(), (d / "notes.txt").unlink(), (d / "sub").rmdir(), (d / ".DS_Store").unlink()
    B.list_images(d, said.append)
    assert said == []
    only = tmp_path / "jpegs"
    only.mkdir()
    for i in range(5):
        Image.new("RGB", (8, 8)).save(only / f"{i}.jpg")
    with pytest.raises(B.BenchError, match="no images"):
        B.list_images(only, said.append)
    assert said == [f"{only}: left out 5 images in a format that is usually lossy (0.jpg, 1.jpg, 2.jpg, ... (2 more): "
                    "a lossy source is no reference; convert to PNG to include it)"]


def test_bench_never_overwrites_what_it_did_not_write(tmp_path, crops_dir):
    quick = ["--codecs", "jpeg-420", "--points", "2", "--no-coldstart", "--scaling-sizes", "none", "--no-reference",
             "--quiet"]
    (tmp_path / "file.txt").write_text("mine")
    r = _run(crops_dir, *quick, "-o", tmp_path / "file.txt")
    assert r.exit_code == 2 and "this is a file" in r.output and len(r.output.splitlines()) == 1, r.output
    assert (tmp_path / "file.txt").read_text() == "mine"
    r = _run(crops_dir, *quick, "-o", crops_dir / "results")  # its plots would be measured next time
    assert r.exit_code == 2 and "inside" in r.output and not (crops_dir / "results").exists()
    user = tmp_path / "user"
    user.mkdir()
    (user / "RESULTS.md").write_text("my notes")
    r = _run(crops_dir, *quick, "-o", user)
    assert r.exit_code == 2 and "did not write" in r.output
    assert [p.name for p in user.iterdir()] == ["RESULTS.md"] and (user / "RESULTS.md").read_text() == "my notes"
    # --report-only with nothing stored: an error, and nothing written (not an empty report)
    r = _run(crops_dir, *quick, "-o", tmp_path / "new", "--report-only")
    assert r.exit_code == 1 and "nothing is stored" in r.output and not (tmp_path / "new").exists()
    assert _run(crops_dir, *quick, "-o", tmp_path / "done").exit_code == 0
    report = (tmp_path / "done" / "RESULTS.md").read_text()
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(other / "flat.png")
    r = _run(other, *quick, "-o", tmp_path / "done", "--report-only")
    assert r.exit_code == 1 and "no stored points" in r.output
    assert (tmp_path / "done" / "RESULTS.md").read_text() == report


# --- where the bits go -------------------------------------------------------------


def test_heatmap_matches_the_file(tmp_path, photo_crops):
    from aecodec.heatmap import bits_map

    data = aecodec.compress(photo_crops[-1][:136, :200], quality=4)  # not a multiple of 64: padding cropped
    rgb, bpp, t = bits_map(data)
    assert bpp.shape == (136, 200) and rgb.shape == (136, 200, 3) and (bpp >= 0).all()
    assert np.array_equal(rgb, np.asarray(aecodec.decompress(data)))
    # the entropy model's bits of the coded symbols are within a few % of the coded strings
    payload = 8 * (t["y_string_bytes"] + t["z_string_bytes"])
    model_bits = t["model_y_bits"] + t["model_z_bits"]
    assert abs(model_bits - payload) < 0.03 * payload + 64
    assert bpp.sum() <= model_bits + 1e-6  # the padded border's bits are outside the picture
    out = tmp_path / "heat.png"
    B.draw_heatmap(data, out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 1.5 * im.size[1]


def test_heatmap_figure_of_a_thin_image_stays_small():
    from aecodec.heatmap import figure_panel

    assert figure_panel(768, 512) == (6.0, 4.0)
    assert figure_panel(2, 3000) == (2.5, 6.0) and figure_panel(3000, 2) == (6.0, 2.5)
    assert figure_panel(512, 768) == (4.0, 6.0)


def test_table_bits_looks_up_only_the_coded_entries():
    """table_bits gathers two CDF entries per symbol (memory O(symbols)); same bits as a
    whole-row lookup, escapes included."""
    import torch

    from aecodec.model import table_bits
    from aecodec.weights import load_model

    gc = load_model().gaussian_conditional
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, gc._quantized_cdf.shape[0], (1, 3, 20, 20), generator=g)
    sym = torch.randint(-40, 41, (1, 3, 20, 20), generator=g)
    bits = table_bits(gc, sym, idx)
    cdf = gc._quantized_cdf.long()
    for i, s, b in zip(idx.reshape(-1).tolist(), sym.reshape(-1).tolist(), bits.reshape(-1).tolist()):
        v = s - int(gc._offset[i])
        mx = int(gc._cdf_length[i]) - 2
        if 0 <= v < mx:
            assert b == pytest.approx(16 - np.log2(int(cdf[i, v + 1]) - int(cdf[i, v])))
        else:
            assert b > 16 - np.log2(int(cdf[i, mx + 1]) - int(cdf[i, mx]))  # the escape and its digits


def test_a_quick_run_beside_published_results_leaves_their_readme(tmp_path):
    import types

    readme = tmp_path / "README.md"
    shown = f"{B.README_START}\nLatest results ([kodak/RESULTS.md](kodak/RESULTS.md))\n{B.README_END}\n"
    readme.write_text("# results\n" + shown)
    cfg = types.SimpleNamespace(readme=None, dataset=tmp_path / "tiny")
    said = []
    assert B._update_readme(cfg, tmp_path / "tiny", "| table |\n", {}, said.append) is None
    assert readme.read_text() == "# results\n" + shown and "left as it is" in said[0]
    # the same folder again, or a README named on purpose: refreshed
    assert B._update_readme(cfg, tmp_path / "kodak", "| new |\n", {}) == readme
    assert "| new |" in readme.read_text() and "kodak/RESULTS.md" in readme.read_text()
    cfg.readme = readme
    assert B._update_readme(cfg, tmp_path / "tiny", "| tiny |\n", {}) == readme
    assert "tiny/RESULTS.md" in readme.read_text()


def test_images_too_small_for_ms_ssim_get_no_ms_ssim_figures(tmp_path, photo_crops):
    d = tmp_path / "tiny"
    d.mkdir()
    for i, c in enumerate(photo_crops[:2]):
        Image.fromarray(c[:96, :96]).save(d / f"t{i}.png")
    r = _run(d, "--codecs", "jpeg-420,webp", "--points", "4", "--no-coldstart", "--scaling-sizes", "none",
             "--no-reference", "-o", tmp_path / "o", "--quiet", "--jobs", "1")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "o" / "RESULTS.md").read_text()
    assert not (tmp_path / "o" / "rd-msssim-db.png").exists() and "rd-msssim-db.png)" not in md
    ms_table = md.split("### BD-rate, MS-SSIM")[1]
    assert "– (no data)" in ms_table and "no overlap" not in ms_table


def test_the_files_list_names_only_what_was_written(tmp_path, crops_dir):
    r = _run(crops_dir, "--codecs", "jpeg-420", "--points", "2", "--no-coldstart", "--scaling-sizes", "none",
             "--no-reference", "-o", tmp_path / "o", "--quiet")
    assert r.exit_code == 0, r.output
    files = (tmp_path / "o" / "RESULTS.md").read_text().split("## Files")[1]
    assert "coldstart.json" not in files and "`rd-psnr.png`" in files
    assert not (tmp_path / "o" / "meta" / "coldstart.json").exists()
    assert not (tmp_path / "o" / "meta" / "scaling.jsonl").exists() and "scaling.jsonl" not in files


def test_sigterm_stops_the_workers_too(tmp_path, photo_crops):
    """`kill` (SIGTERM) of a parallel bench: exit 143 with one line, the points kept, and no
    worker left running (they outlived the parent, holding its stdout)."""
    import os
    import signal
    import subprocess
    import time

    if not os.path.isdir("/proc"):
        pytest.skip("reads the process table from /proc")
    (tmp_path / "img").mkdir()
    Image.fromarray(photo_crops[0][:128, :128]).save(tmp_path / "img" / "a.png")
    p = subprocess.Popen([sys.executable, "-c", "from aecodec.cli import main; main()", "bench", str(tmp_path / "img"),
                          "--codecs", "aecodec,jpeg-420,webp", "--scaling-sizes", "none", "--no-coldstart", "-j", "2",
                          "-o", str(tmp_path / "out"), "--no-reference", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def children():
        found = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1]) == p.pid:
                    found.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
        return found

    t0 = time.time()
    while time.time() - t0 < 120 and len(children()) < 2 and p.poll() is None:
        time.sleep(0.2)
    workers = children()
    assert p.poll() is None and len(workers) >= 2, "the workers did not start"
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "terminated; the points measured so far are kept" in err, err
    assert "Traceback" not in err
    time.sleep(1)

    def running(pid):
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    assert not [w for w in workers if running(w)]


def test_a_codec_without_points_under_its_key_leaves_no_old_curve(tmp_path, crops_dir, monkeypatch):
    """New weights (a new key) with no complete point yet: the old weights' NAME.json must go, or
    tools/rdcompare.py would report the old model's figures as the new one's. A run that does not
    measure that codec (--report-only, another --codecs) keeps the file and says so."""
    quick = ["--codecs", "jpeg-420,webp", "--points", "2", "--no-coldstart", "--scaling-sizes", "none",
             "--no-reference", "-o", tmp_path / "o"]
    assert _run(crops_dir, *quick, "--quiet").exit_code == 0
    store = tmp_path / "o" / "per-image" / "webp.jsonl"
    store.write_text(store.read_text().replace(B.get_codec("webp").key(), "0" * 16))  # measured by "another" webp
    r = _run(crops_dir, *quick, "--report-only")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "webp.json").exists() and "webp.json is from other settings" in r.output
    r = _run(crops_dir, *quick, "--codecs", "jpeg-420")  # measures another codec: webp's file is not its to judge
    assert r.exit_code == 0 and (tmp_path / "o" / "webp.json").exists(), r.output
    monkeypatch.setattr(B, "_run_tasks", lambda *a, **k: None)  # a run stopped before any point completed
    r = _run(crops_dir, *quick)
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "o" / "webp.json").exists() and "removed" in r.output
    assert (tmp_path / "o" / "jpeg-420.json").exists()


def test_a_stored_point_that_no_longer_reproduces_stops_the_run(tmp_path, crops_dir):
    """The key does not cover aecodec's own code: one reused point per codec is measured again."""
    quick = ["--codecs", "jpeg-420", "--points", "2", "--no-coldstart", "--scaling-sizes", "none",
             "--no-reference", "--quiet", "-o", tmp_path / "o", "--jobs", "1"]
    assert _run(crops_dir, *quick).exit_code == 0
    store = tmp_path / "o" / "per-image" / "jpeg-420.jsonl"
    rows = [json.loads(line) for line in store.read_text().splitlines()]
    r = _run(crops_dir, *quick)
    assert r.exit_code == 0 and "0 points measured" in r.output, r.output  # as stored: passes
    for field, shift in (("bytes", 500), ("psnr_rgb", 0.1)):  # as if another version of the code had made them
        changed = [{**row, field: row[field] + shift} for row in rows]
        store.write_text("".join(json.dumps(row) + "\n" for row in changed))
        r = _run(crops_dir, *quick)
        assert r.exit_code == 1 and "no longer reproduces" in r.output and str(store) in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    assert _run(crops_dir, *quick, "--report-only").exit_code == 0  # a report measures nothing


def test_a_lossless_stored_point_reproduces(tmp_path):
    """A flat image decodes exactly: PSNR inf, stored as null. The re-check must read that as equal."""
    d = tmp_path / "flat"
    d.mkdir()
    Image.new("RGB", (64, 64), (120, 120, 120)).save(d / "a.png")
    quick = ["--codecs", "jpeg-420", "--grid", "jpeg-420=90,95,98,100", "--no-coldstart", "--scaling-sizes", "none",
             "--no-reference", "--quiet", "-o", tmp_path / "o", "--jobs", "1"]
    assert _run(d, *quick).exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "o" / "per-image" / "jpeg-420.jsonl").read_text().splitlines()]
    assert any(r["psnr_rgb"] is None for r in rows)  # at least one lossless point, as intended
    r = _run(d, *quick)
    assert r.exit_code == 0 and "0 points measured" in r.output, r.output
