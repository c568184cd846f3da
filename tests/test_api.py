import subprocess
import sys

import numpy as np
import pytest

import aecodec


def test_public_names():
    assert aecodec.QUALITIES == tuple(range(1, 9))
    assert aecodec.DEFAULT_QUALITY in aecodec.QUALITIES
    assert issubclass(aecodec.FormatError, ValueError)


@pytest.mark.parametrize("q", [0, 9, 999, -1, 0.99, 8.01, float("nan"), float("inf"), "3", "6.5", True, None])
def test_bad_quality_raises_valueerror(q):
    with pytest.raises(ValueError):
        aecodec.compress(np.zeros((8, 8, 3), np.uint8), quality=q)


def test_quality_between_levels(photo_crops):
    """A quality between two levels (hundredths) codes with interpolated gains: its file lies
    between the two levels' in size and PSNR, says its quality, and a whole level is coded
    exactly as before (no QFRC chunk)."""
    from aecodec.api import check_quality
    from aecodec.format import unpack

    from decimal import Decimal
    from fractions import Fraction

    assert [check_quality(q) for q in (6, np.int64(6), 6.0, 5.5, np.float32(6.25), 5.555, 7.999, 1, 8.004, 0.996,
                                       Decimal("6.5"), Fraction(13, 2))] == \
        [6, 6, 6, 5.5, 6.25, 5.56, 8, 1, 8, 1, 6.5, 6.5]
    assert isinstance(check_quality(6.0), int)
    img = photo_crops[0][:128, :192]

    def psnr(data):
        return 10 * np.log10(255**2 / np.mean((np.asarray(aecodec.decompress(data), float) - img) ** 2))

    files = {q: aecodec.compress(img, quality=q) for q in (5, 5.25, 5.5, 5.75, 6)}
    sizes = [len(files[q]) for q in sorted(files)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    assert psnr(files[5]) < psnr(files[5.5]) < psnr(files[6])
    for q, data in files.items():
        c = unpack(data)
        assert aecodec.info(data)["quality"] == q and type(aecodec.info(data)["quality"]) is type(q)
        assert (b"QFRC" in c.chunks) == (q != int(q)) and c.header.quality == int(q)
    assert aecodec.compress(img, quality=5.5) == files[5.5]  # deterministic
    assert aecodec.compress(img, quality=8.0) == aecodec.compress(img, quality=8)


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
    assert aecodec.decompress(data, max_pixels=1200).size == (30, 40)  # the limit itself is allowed
    with pytest.raises(aecodec.FormatError, match="limit"):
        aecodec.decompress(data, max_pixels=1199)
    assert aecodec.MAX_PIXELS == 2**27
    # 0 means no limit, as --max-pixels 0 does; nonsense is refused, not read as a limit
    assert aecodec.decompress(data, max_pixels=0).size == (30, 40)
    assert aecodec.compress(x, quality=1, max_pixels=0) == data
    for bad, err in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("1000", TypeError)):
        with pytest.raises(err, match="max_pixels"):
            aecodec.decompress(data, max_pixels=bad)
        with pytest.raises(err, match="max_pixels"):
            aecodec.compress(x, quality=1, max_pixels=bad)


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


def test_api_errors_name_the_problem(tmp_path):
    from PIL import Image

    with pytest.raises(TypeError, match="expected bytes"):
        aecodec.info("x.aec")
    buf = __import__("io").BytesIO()
    Image.fromarray((np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)).save(buf, "PNG")
    (tmp_path / "t.png").write_bytes(buf.getvalue()[:200])  # opens lazily, fails on load
    with Image.open(tmp_path / "t.png") as im, pytest.raises(aecodec.ImageError, match="cannot read"):
        aecodec.compress(im, quality=1)
    with pytest.raises(aecodec.ImageError, match="dtype"):
        aecodec.compress(np.zeros((8, 8, 3), dtype=object), quality=1)


def test_non_uint8_arrays_say_how_they_were_read():
    x = np.full((16, 16, 3), 200, np.uint16)  # 16-bit data: nearly black, and said so
    with pytest.warns(aecodec.AecodecWarning, match="16-bit"):
        aecodec.compress(x, quality=1)
    with pytest.warns(aecodec.AecodecWarning, match="0..1"):
        aecodec.compress(np.full((16, 16), 0.5, np.float32), quality=1)
    with pytest.warns(aecodec.AecodecWarning, match="0..1"):  # white in 0..1 includes exactly 1.0
        white = aecodec.decompress(aecodec.compress(np.ones((64, 64, 3)), quality=8))
    assert np.asarray(white).mean() > 250  # not read as 0..255 (black)
    nan = np.full((16, 16, 3), 0.5)
    nan[3, 4, 1] = np.nan
    with pytest.raises(aecodec.ImageError, match="1 NaN sample"):
        aecodec.compress(nan, quality=1)
    inf = np.full((16, 16, 3), 0.5)
    inf[0, 0] = np.inf
    with pytest.warns(aecodec.AecodecWarning, match=r"0\.\.1.*3 infinite sample\(s\) clipped"):
        aecodec.compress(inf, quality=1)
    with pytest.warns(aecodec.AecodecWarning, match="negative samples clipped"):
        aecodec.compress(np.full((16, 16, 3), -3, np.int32), quality=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.uint8, np.int64, np.int32, np.uint32):  # 0..255 as they are: nothing to say
            aecodec.compress(np.full((16, 16, 3), 200, dtype), quality=1)


def test_pillow_saves_aec(tmp_path):
    from PIL import Image

    x = (np.arange(48 * 40 * 3) % 253).astype(np.uint8).reshape(48, 40, 3)
    Image.fromarray(x).save(tmp_path / "x.aec", quality=3)
    assert aecodec.info((tmp_path / "x.aec").read_bytes())["quality"] == 3
    with Image.open(tmp_path / "x.aec") as im:
        assert im.size == (40, 48) and im.format == "AEC"
    Image.fromarray(x).save(tmp_path / "d.aec")
    assert aecodec.info((tmp_path / "d.aec").read_bytes())["quality"] == aecodec.api.DEFAULT_QUALITY
    with pytest.raises(ValueError, match="quality must be from 1 to 8, got 95 .aecodec's scale is 1..8, not JPEG's"):
        Image.fromarray(x).save(tmp_path / "bad.aec", quality=95)
    assert not (tmp_path / "bad.aec").exists()
    Image.fromarray(x).save(tmp_path / "n.aec", quality=None)  # (some wrappers pass None: the default)
    assert aecodec.info((tmp_path / "n.aec").read_bytes())["quality"] == aecodec.api.DEFAULT_QUALITY
    Image.fromarray(x).save(tmp_path / "h.aec", quality=2.5)
    assert aecodec.info((tmp_path / "h.aec").read_bytes())["quality"] == 2.5
    # save_all of a single frame is a plain save; of several frames, a clear refusal
    Image.fromarray(x).save(tmp_path / "all.aec", save_all=True, quality=3)
    assert (tmp_path / "all.aec").read_bytes() == (tmp_path / "x.aec").read_bytes()
    frames = [Image.fromarray(x), Image.fromarray(255 - x)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "anim.gif") as im, pytest.raises(ValueError, match="2 frames"):
        im.save(tmp_path / "anim.aec", save_all=True)
    with pytest.raises(ValueError, match="2 frames"):
        frames[0].save(tmp_path / "anim.aec", save_all=True, append_images=frames[1:])
    assert not (tmp_path / "anim.aec").exists()


def test_pillow_save_stores_the_pixels_as_they_are(tmp_path):
    """im.save() keeps im's pixels, as Pillow's own writers do: a photo's EXIF orientation,
    which Pillow keeps on rotated copies, is not applied again (it was: rotated twice); the
    API and the command line, which read files, still apply it.  icc_profile= is used."""
    import io

    from PIL import Image, ImageCms

    x = (np.arange(64 * 96 * 3) % 251).astype(np.uint8).reshape(64, 96, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    jpeg = Image.open(io.BytesIO(buf.getvalue()))
    assert jpeg.size == (96, 64)
    upright = jpeg.rotate(-90, expand=True)  # the user's own rotation; Pillow keeps info["exif"]
    assert "exif" in upright.info and upright.size == (64, 96)
    upright.save(tmp_path / "u.aec")
    jpeg.save(tmp_path / "j.aec")
    with Image.open(tmp_path / "u.aec") as u, Image.open(tmp_path / "j.aec") as j:
        assert u.size == (64, 96) and j.size == (96, 64)  # as .png would store them
        ref = np.asarray(upright.convert("RGB"), float)
        assert 10 * np.log10(255**2 / np.mean((np.asarray(u.convert("RGB"), float) - ref) ** 2)) > 25
    assert aecodec.decompress(aecodec.compress(jpeg)).size == (64, 96)  # the API applies the orientation
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(x).save(tmp_path / "i.aec", icc_profile=icc)
    with Image.open(tmp_path / "i.aec") as im:
        assert im.info.get("icc_profile") == icc
    tagged = Image.fromarray(x)
    tagged.info["icc_profile"] = icc
    tagged.save(tmp_path / "none.aec", icc_profile=None)  # given as None: dropped, as Pillow's writers do
    with Image.open(tmp_path / "none.aec") as im:
        assert "icc_profile" not in im.info


def test_pillow_plugin_closes_the_file_and_names_damage(tmp_path):
    import warnings

    from PIL import Image, UnidentifiedImageError

    data = aecodec.compress(np.full((24, 20, 3), 90, np.uint8), quality=1)
    (tmp_path / "x.aec").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        im = Image.open(tmp_path / "x.aec")
        fp = im.fp
        im.load()
        assert fp.closed and im.fp is None  # let go after load, as PNG does (no handle per image in a loop)
        assert im.size == (20, 24)
    bad = bytearray(data)
    bad[12] ^= 0xFF  # inside the header
    (tmp_path / "bad.aec").write_bytes(bytes(bad))
    with pytest.raises(UnidentifiedImageError, match=r"cannot open \.aec file .*bad\.aec.: (corrupt|.*CRC)") as e:
        Image.open(tmp_path / "bad.aec")
    assert "cannot identify image file" not in str(e.value)


def test_pixel_counts_in_words():
    from aecodec.image import pixels_in_words

    assert pixels_in_words(16384) == "16384 pixels" and pixels_in_words(2**27) == "134.2 Mpx"
    data = aecodec.compress(np.zeros((40, 30, 3), np.uint8), quality=1)
    with pytest.raises(aecodec.FormatError, match=r"\(1200 pixels\), over the decoder's limit of 1000 pixels"):
        aecodec.decompress(data, max_pixels=1000)


@pytest.mark.parametrize("kind", ["photo", "flat"])
def test_compress_to_size_picks_the_best_quality_that_fits(photo_crops, kind):
    # a tiny flat image: file sizes do not grow with the level (90, 94, 90, 90, ... bytes)
    img = photo_crops[0][:128, :192] if kind == "photo" else np.full((64, 64, 3), 90, np.uint8)
    sizes = {q: len(aecodec.compress(img, quality=q)) for q in aecodec.QUALITIES}
    for budget in sorted({sizes[q] for q in (1, 3, 8)} | {(sizes[q] + sizes[q + 1]) // 2 for q in (1, 6)}):
        for cap in (8, 2.5):
            fits = [q for q in range(1, int(cap) + 1) if sizes[q] <= budget]
            if not fits:
                continue
            data = aecodec.compress_to_size(img, budget, max_quality=cap)
            got = aecodec.info(data)["quality"]
            assert max(fits) <= got <= cap and len(data) <= budget, (budget, cap, got, sizes)
            assert data == aecodec.compress(img, quality=got)  # byte for byte the plain file
            if kind == "photo" and got < cap:  # sizes grow with the quality here: the next 0.01 does not fit
                assert len(aecodec.compress(img, quality=round(got + 0.01, 2))) > budget, (budget, cap, got)
    smallest = min(sizes.values())
    with pytest.raises(aecodec.SizeError, match=f"needs {smallest} bytes, over the {smallest - 1} allowed"):
        aecodec.compress_to_size(img, smallest - 1)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_bytes"):
            aecodec.compress_to_size(img, bad)


def test_save_plan_refuses_what_a_format_cannot_hold():
    from aecodec.image import ImageError, save_plan

    with pytest.raises(ImageError, match="256x256"):
        save_plan("ICO", "RGB", size=(300, 200))  # Pillow would scale it down
    assert save_plan("ICO", "RGB", size=(64, 64)).warnings == []
    with pytest.raises(ImageError, match="alpha"):
        save_plan("BMP", "RGBA")
    with pytest.raises(ImageError, match="stretched"):
        save_plan("ICNS", "RGB", size=(64, 64))
    assert save_plan("PNG", "RGBA", icc=True).keep_icc
    plan = save_plan("BMP", "RGB", icc=True)
    assert not plan.keep_icc and "ICC" in plan.warnings[0]


EMBEDDED = r"""
import json, os, sys
import numpy as np
import torch
torch.set_default_dtype(torch.float64)  # before aecodec's first use: the model is still float32
import aecodec
img = (np.arange(48 * 80 * 3) % 251).astype(np.uint8).reshape(48, 80, 3)
data = aecodec.compress(img, quality=3)
px = np.asarray(aecodec.decompress(data))
torch.set_default_dtype(torch.float32)
with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast changes nothing
    same = aecodec.compress(img, quality=3) == data
    same_px = np.array_equal(np.asarray(aecodec.decompress(data)), px)
pid = os.fork()  # torch's thread pool has run: a forked child used to hang here
if pid == 0:
    ok = aecodec.compress(img, quality=3) == data
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(json.dumps({"hex": data.hex(), "same": same, "same_px": same_px, "child": os.waitstatus_to_exitcode(status)}))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_host_application_cannot_change_the_bytes_or_hang_it():
    """torch.set_default_dtype(float64) before the first use, a caller's bfloat16 autocast and a
    fork after use: the same bytes as here, and no hang (all three broke aecodec before)."""
    import json

    r = subprocess.run([sys.executable, "-c", EMBEDDED], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    img = (np.arange(48 * 80 * 3) % 251).astype(np.uint8).reshape(48, 80, 3)
    assert bytes.fromhex(got["hex"]) == aecodec.compress(img, quality=3)
    assert got["same"] and got["same_px"] and got["child"] == 0, got


def test_one_base_class_for_aecodec_errors():
    for cls, also in [(aecodec.FormatError, ValueError), (aecodec.ImageError, ValueError),
                      (aecodec.SizeError, ValueError), (aecodec.WeightsError, RuntimeError),
                      (aecodec.DecoderUnavailable, RuntimeError)]:
        assert issubclass(cls, aecodec.AecodecError) and issubclass(cls, also), cls
    with pytest.raises(aecodec.AecodecError):
        aecodec.decompress(b"\x8aAEC junk")


def test_a_worker_that_cannot_run_is_not_blamed_on_the_file(monkeypatch, photo_crops):
    """The entropy decoder runs in a worker started with sys.executable: where that is not a
    Python (uWSGI, an embedded interpreter), a valid file is not called corrupt."""
    from aecodec import rans
    from aecodec.format import pack, unpack

    data = aecodec.compress(photo_crops[0][:64, :64], quality=2)
    c = unpack(data)  # a valid container whose y string is cut short: the worker fails on it
    bad = pack(c.header, [(t, b[:-4] if t == b"YSTR" else b) for t, b in c.chunks.items()])
    monkeypatch.setattr(rans, "_worker_works", [])
    monkeypatch.setattr(sys, "executable", "/bin/true")  # runs, answers nothing
    with pytest.raises(aecodec.DecoderUnavailable, match="fails on a known-good string too"):
        aecodec.decompress(data)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(sys, "_base_executable", "/nonexistent/python3", raising=False)
    with pytest.raises(aecodec.DecoderUnavailable, match="not a Python it can start"):
        aecodec.decompress(data)
    monkeypatch.undo()
    monkeypatch.setattr(rans, "_worker_works", [])
    with pytest.raises(aecodec.FormatError, match="corrupt YSTR"):  # a damaged file is still the file's fault
        aecodec.decompress(bad)
    rans._check_worker("a test")  # the real worker passes the probe, once
    assert rans._worker_works == [True]
    assert np.asarray(aecodec.decompress(data)).shape == (64, 64, 3)


def test_compress_to_size_on_a_larger_image_searches_instead_of_scanning(photo_crops, monkeypatch):
    """Over SCAN_PIXELS: quality 1 right after the top, so an impossible budget is refused after
    two encodes (it took one per level), and a possible one is found in a few."""
    from aecodec import api, coding

    img = np.concatenate(photo_crops, axis=1)  # 256 x 512
    assert img.shape[0] * img.shape[1] > api.SCAN_PIXELS
    calls = []
    real = coding.encode
    monkeypatch.setattr(coding, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    q1 = len(aecodec.compress(img, quality=1))
    calls.clear()
    with pytest.raises(aecodec.SizeError, match=f"even quality 1 needs {q1} bytes, over the 100 allowed"):
        aecodec.compress_to_size(img, 100)
    assert len(calls) == 2
    q2, q3 = len(aecodec.compress(img, quality=2)), len(aecodec.compress(img, quality=3))
    calls.clear()
    data = aecodec.compress_to_size(img, (q2 + q3) // 2)
    got = aecodec.info(data)["quality"]
    assert 2 < got < 3 and len(data) <= (q2 + q3) // 2 and len(calls) <= 12, (got, len(calls))
    assert len(aecodec.compress(img, quality=round(got + 0.01, 2))) > (q2 + q3) // 2
    calls.clear()  # near quality 1 (within 10 %): every level is tried, as on small images
    with pytest.raises(aecodec.SizeError, match="even the smallest file"):
        aecodec.compress_to_size(img, q1 - 1)
    assert len(calls) == 8
