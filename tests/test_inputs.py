"""Every kind of image a user may have: what is coded, what comes back, what is said about it."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms

import aecodec
from aecodec.cli import main
from aecodec.format import MAX_DIMENSION, unpack
from aecodec.image import AecodecWarning, ImageError, open_image

from conftest import psnr


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def photo(photo_crops):
    return photo_crops[0][:48, :64].copy()


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _png16(arr: np.ndarray, ctype: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _roundtrip_cli(tmp_path, name: str, data: bytes):
    src = tmp_path / name
    src.write_bytes(data)
    r = run("compress", src, "-q", "4", "-o", tmp_path / "x.aec")
    assert r.exit_code == 0, r.output
    r2 = run("decompress", tmp_path / "x.aec", "-o", tmp_path / "x.png")
    assert r2.exit_code == 0, r2.output
    return Image.open(tmp_path / "x.png"), r.stderr


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# -- colour modes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "PA-transparency", "1", "I;16", "I", "F"])
def test_every_mode_roundtrips(tmp_path, photo, mode):
    rgb = Image.fromarray(photo)
    alpha = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)))
    expect_mode, expect_alpha = {"L": ("L", None), "LA": ("LA", alpha), "RGB": ("RGB", None),
                                 "RGBA": ("RGBA", alpha), "P": ("RGB", None), "PA-transparency": ("RGBA", None),
                                 "1": ("L", None), "I;16": ("L", None), "I": ("L", None), "F": ("L", None)}[mode]
    if mode in ("L", "RGB"):
        im = rgb.convert(mode)
    elif mode == "LA":
        im = Image.merge("LA", (rgb.convert("L"), alpha))
    elif mode == "RGBA":
        im = Image.merge("RGBA", (*rgb.split(), alpha))
    elif mode == "P":
        im = rgb.convert("P")
    elif mode == "PA-transparency":
        im = rgb.convert("P")
        im.info["transparency"] = 0
    elif mode == "1":
        im = rgb.convert("1")
    elif mode == "I;16":
        im = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        assert im.mode.startswith("I;16")
    elif mode == "I":
        im = rgb.convert("I")
    else:
        im = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255.0, "F")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = aecodec.decompress(aecodec.compress(im, quality=5))
    assert out.mode == expect_mode and out.size == (64, 48)
    if expect_alpha is not None:
        assert np.array_equal(np.asarray(out)[:, :, -1], np.asarray(expect_alpha)), "alpha must be lossless"
    if mode == "PA-transparency":
        a = np.asarray(out)[:, :, 3]
        assert np.array_equal(a == 0, np.asarray(im) == 0), "palette transparency must survive"
    ref = np.asarray(im.convert("RGB") if expect_mode in ("RGB", "RGBA") else rgb.convert("L"))
    got = np.asarray(out.convert("RGB") if expect_mode in ("RGB", "RGBA") else out.convert("L"))
    if mode != "1":
        assert psnr(ref, got) > 10  # sanity band only: development weights


def test_16bit_png_reduced_with_warning(tmp_path):
    ramp = (np.arange(24 * 20, dtype=np.uint32).reshape(24, 20) * 137 % 65536).astype(np.uint16)
    # grey: nearest 8-bit level
    p = open_image(io.BytesIO(_png16(ramp, 0)))
    assert p.mode == "L" and any("16-bit" in n for n in p.notes)
    assert np.array_equal(p.rgb[:, :, 0], np.round(ramp / 257.0).astype(np.uint8))
    # colour: Pillow hands over the high byte
    rgb16 = np.dstack([ramp, ramp[::-1], ramp[:, ::-1]])
    p = open_image(io.BytesIO(_png16(rgb16, 2)))
    assert p.mode == "RGB" and any("16-bit" in n for n in p.notes)
    assert np.array_equal(p.rgb, (rgb16 >> 8).astype(np.uint8))
    # grey + alpha 16-bit (Pillow opens it as RGBA): restored as LA
    p = open_image(io.BytesIO(_png16(np.dstack([ramp, ramp[::-1]]), 4)))
    assert p.mode == "LA"
    # the command line says it, in one line, and still succeeds
    img, err = _roundtrip_cli(tmp_path, "deep.png", _png16(rgb16, 2))
    assert img.mode == "RGB" and "warning" in err and "16-bit" in err


def test_cmyk_jpeg(tmp_path, photo):
    cmyk = Image.fromarray(photo).convert("CMYK")
    img, err = _roundtrip_cli(tmp_path, "cmyk.jpg", _save(cmyk, "JPEG", quality=95))
    assert img.mode == "RGB" and img.size == (64, 48)
    assert "CMYK" in err and "warning" in err
    assert psnr(photo, img) > 10
    # a CMYK image whose profile cannot be used: naive conversion, said so
    p = aecodec.image.planes_from_pil(_with_info(cmyk, icc_profile=b"not a profile"))
    assert p.mode == "RGB" and p.icc is None and any("could not be applied" in n for n in p.notes)


def _with_info(im, **info):
    im = im.copy()
    im.info.update(info)
    return im


def test_exif_rotated_jpeg_cli(tmp_path, photo):
    im = Image.fromarray(photo[:40, :64])
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW on display
    img, _ = _roundtrip_cli(tmp_path, "rot.jpg", _save(im, "JPEG", exif=exif, quality=95))
    assert img.size == (40, 64)


def test_icc_profile_carried_and_restored(tmp_path, photo):
    icc = _srgb_icc()
    for mode in ("RGB", "L", "RGBA"):
        im = Image.fromarray(photo).convert(mode)
        data = aecodec.compress(_with_info(im, icc_profile=icc), quality=3)
        assert aecodec.info(data)["icc_profile_bytes"] == len(icc)
        out = aecodec.decompress(data)
        assert out.info.get("icc_profile") == icc, mode
    # command line: PNG in, PNG out, same profile; a format without ICC says it drops it
    src = tmp_path / "icc.png"
    Image.fromarray(photo).save(src, icc_profile=icc)
    assert run("compress", src, "-o", tmp_path / "icc.aec").exit_code == 0
    for ext in (".png", ".tiff", ".webp", ".jpg"):
        r = run("decompress", tmp_path / "icc.aec", "-o", tmp_path / f"back{ext}")
        assert r.exit_code == 0, r.output
        assert Image.open(tmp_path / f"back{ext}").info.get("icc_profile") == icc, ext
    r = run("decompress", tmp_path / "icc.aec", "-o", tmp_path / "back.bmp")
    assert r.exit_code == 0 and "ICC" in r.stderr
    # no profile in, no profile out
    assert "icc_profile" not in aecodec.decompress(aecodec.compress(photo, quality=3)).info


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_first_frame_with_warning(tmp_path, photo, fmt):
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo), Image.fromarray(photo[::-1].copy())]
    data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                 **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img, err = _roundtrip_cli(tmp_path, f"anim.{fmt.lower()}", data)
    assert "warning" in err and "first" in err and err.count("warning") == 1
    first = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    other = np.asarray(frames[1])
    got = np.asarray(img.convert("RGB"))
    assert psnr(first, got) > psnr(other, got) + 3, "the first frame is coded"
    with pytest.warns(AecodecWarning, match="first"):
        p = open_image(io.BytesIO(data))
        aecodec.image.warn_notes(p)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_library_warns_about_animation_too(photo, fmt):
    """The library says it too, for an image the caller opened (not only the command line)."""
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                 **({"lossless": True} if fmt == "WEBP" else {}))
    with pytest.warns(AecodecWarning, match="first"):
        aecodec.compress(Image.open(io.BytesIO(data)), quality=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one frame: nothing to say
        aecodec.compress(Image.open(io.BytesIO(_save(frames[0], fmt))), quality=1)


@pytest.mark.parametrize("kind", ["RGB", "L", "I;16", "RGB-16"])
def test_colour_key_transparency_kept_as_alpha(tmp_path, photo, kind):
    """PNG's tRNS on a grey or RGB image (one exact value is transparent) comes back as alpha,
    through the command line and the library; the colour is coded as usual."""
    rgb = photo.copy()
    hole = np.zeros(rgb.shape[:2], bool)
    hole[10:20, 5:30] = True
    if kind == "RGB":
        key = (150, 171, 195)
        rgb[hole] = key
        data = _save(Image.fromarray(rgb), "PNG", transparency=key)
    elif kind == "L":
        g = np.asarray(Image.fromarray(photo).convert("L")).copy()
        g[g == 167] = 166
        g[hole] = 167
        data = _save(Image.fromarray(g), "PNG", transparency=167)
    elif kind == "I;16":
        g = np.asarray(Image.fromarray(photo).convert("L")).astype(np.uint16) * 257
        g[hole] = 12345
        data = _save(Image.fromarray(g), "PNG", transparency=12345)
    else:  # 16-bit RGB written by hand, with a 16-bit tRNS key
        rgb16 = photo.astype(np.uint16) * 257
        rgb16[hole] = (40000, 1000, 65535)
        png = _png16(rgb16, 2)
        trns = b"tRNS" + struct.pack(">HHH", 40000, 1000, 65535)
        chunk = struct.pack(">I", 6) + trns + struct.pack(">I", zlib.crc32(trns))
        data = png[:33] + chunk + png[33:]  # after IHDR (8 + 25 bytes)
    im = Image.open(io.BytesIO(data))
    assert "transparency" in im.info and im.mode in ("RGB", "L", "I;16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = aecodec.decompress(aecodec.compress(im, quality=3))
    assert out.mode == ("LA" if kind in ("L", "I;16") else "RGBA")
    assert np.array_equal(np.asarray(out)[:, :, -1] == 0, hole), "the keyed pixels, and only they, are transparent"
    img, _ = _roundtrip_cli(tmp_path, "key.png", data)
    assert img.mode == out.mode and np.array_equal(np.asarray(img)[:, :, -1] == 0, hole)
    # a key no pixel has: nothing is transparent, the image stays as it was
    if kind == "RGB":
        plain = _save(Image.fromarray(photo), "PNG", transparency=(1, 2, 3))
        assert not np.all(photo == (1, 2, 3), axis=2).any()
        assert aecodec.decompress(aecodec.compress(Image.open(io.BytesIO(plain)), quality=1)).mode == "RGB"


def test_colour_key_of_2_bit_grey_and_16_bit_rgb():
    """A 2-bit grey PNG's key is in 2-bit units while Pillow scales the pixels to 0..255: the key
    is scaled too. A 16-bit RGB key is matched on the high bytes, and that is said."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    levels = np.array([[0, 1, 2, 3] * 4] * 8, dtype=np.uint8)  # 16 x 8, 2 bits per pixel
    rows = b"".join(b"\x00" + bytes(int("".join(f"{v:02b}" for v in r[i:i + 4]), 2) for i in range(0, 16, 4))
                    for r in levels)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 8, 2, 0, 0, 0, 0))
           + chunk(b"tRNS", struct.pack(">H", 1)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    p = open_image(io.BytesIO(png))
    assert p.mode == "LA" and np.array_equal(p.alpha == 0, levels == 1)
    # 16-bit RGB: two colours one 16-bit step apart, the key on one of them
    rgb16 = np.zeros((8, 16, 3), np.uint16)
    rgb16[:, :8] = (1000, 2000, 3000)
    rgb16[:, 8:] = (1001, 2000, 3000)
    raw = _png16(rgb16, 2)
    trns = chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000))
    p = open_image(io.BytesIO(raw[:33] + trns + raw[33:]))
    assert p.mode == "RGBA" and (p.alpha == 0).all()  # the high bytes cannot tell them apart...
    assert any("high byte" in n for n in p.notes)  # ...and that is said


@pytest.mark.parametrize("ext, module", [(".heic", "pillow_heif"), (".jxl", "pillow_jxl")])
def test_heif_and_jpeg_xl_read_and_written_where_their_plugins_are(tmp_path, photo, ext, module):
    """The README and --image-quality name .heic and .jxl outputs: with the plugin installed (the
    bench and test extras have both) the command line writes them and reads them back."""
    pytest.importorskip(module)
    Image.fromarray(photo).save(tmp_path / "a.png")
    assert run("compress", tmp_path / "a.png", "-q", "2").exit_code == 0
    r = run("decompress", tmp_path / "a.aec", "-o", tmp_path / f"a{ext}")
    assert r.exit_code == 0, r.output
    assert "(lossy)" in r.stderr and (tmp_path / f"a{ext}").stat().st_size > 0
    r = run("compress", tmp_path / f"a{ext}", "-o", tmp_path / "b.aec", "-q", "2")
    assert r.exit_code == 0, r.output
    back = np.asarray(aecodec.decompress((tmp_path / "b.aec").read_bytes()).convert("RGB"))
    assert back.shape == photo.shape and psnr(photo, back) > 10


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 777), (777, 1), (3, 5000), (1, 2100)])
def test_tiny_thin_and_very_wide(shape):
    x = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = aecodec.decompress(aecodec.compress(x, quality=2))
    assert out.size == (shape[1], shape[0]) and out.mode == "RGB"


def test_wider_than_the_format_refused_clearly():
    with pytest.raises(ImageError, match="at most"):
        aecodec.compress(np.zeros((1, MAX_DIMENSION + 1), np.uint8))
    assert unpack(aecodec.compress(np.zeros((1, 64), np.uint8), quality=1)).header.width == 64


def test_pillow_bomb_refused_before_decoding(tmp_path):
    """A PNG header claiming 60000 x 60000 pixels is refused before any pixel is decoded."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="over the limit"):
        open_image(io.BytesIO(png), max_pixels=aecodec.MAX_PIXELS)
    (tmp_path / "bomb.png").write_bytes(png)
    r = run("compress", tmp_path / "bomb.png")
    assert r.exit_code == 1 and "over the limit" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "bomb.aec").exists()
    # the limit is an option
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    r = run("compress", small, "--max-pixels", "1000")
    assert r.exit_code == 1 and "--max-pixels" in r.stderr
    assert run("compress", small, "--max-pixels", "1200").exit_code == 0


@pytest.mark.parametrize("kind", ["empty", "random", "text", "directory", "missing", "truncated-png",
                                  "no-permission"])
def test_unreadable_input_one_line_exit_1_no_output(tmp_path, photo, kind, monkeypatch):
    src = tmp_path / f"in-{kind}.png"
    if kind == "empty":
        src.write_bytes(b"")
    elif kind == "random":
        src.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "text":
        src.write_text("hello, I am not an image\n" * 20)
    elif kind == "directory":
        src.mkdir()
    elif kind == "truncated-png":
        src.write_bytes(_save(Image.fromarray(photo), "PNG")[:400])
    elif kind == "no-permission":
        Image.fromarray(photo).save(src)
        src.chmod(0)
        import os

        if os.geteuid() == 0:  # root reads anything: make the open fail the way it would for a user
            real_open = Image.open

            def deny(fp, *a, **k):
                if str(fp) == str(src):
                    raise PermissionError(13, "Permission denied", str(fp))
                return real_open(fp, *a, **k)

            monkeypatch.setattr(Image, "open", deny)
    r = run("compress", src, "-o", tmp_path / "out.aec")
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("aecodec: error:") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "out.aec").exists()
    assert not list(tmp_path.glob(".*.part"))


# -- what a caller's PIL image or array may be (from a review of the API) ---------------------------

def _png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))


def test_palette_with_alpha_keeps_its_transparency(photo):
    rgba = np.dstack([photo, np.where(np.arange(photo.shape[1]) < 32, 0, 255)[None, :].repeat(photo.shape[0], 0)])
    q = Image.fromarray(rgba.astype(np.uint8), "RGBA").quantize(16)  # palette mode RGBA, no "transparency"
    assert q.mode == "P" and "transparency" not in q.info
    out = aecodec.decompress(aecodec.compress(q, quality=4))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[:, :, 3], np.asarray(q.convert("RGBA"))[:, :, 3])
    opaque = Image.fromarray(photo).quantize(16)
    opaque.putpalette([v for c in np.asarray(opaque.getpalette()).reshape(-1, 3) for v in (*c, 255)], "RGBA")
    assert aecodec.decompress(aecodec.compress(opaque, quality=4)).mode == "RGB"  # alpha nobody uses: none


def test_the_same_image_object_is_read_the_same_way_twice():
    """Pillow forgets the file's sample layout once it loads the pixels; a 16-bit key must still be read
    as 16-bit on the second call (it used to give RGB, alpha lost)."""
    rgb16 = np.zeros((8, 16, 3), np.uint16)
    rgb16[:, :8] = (65535, 0, 0)
    raw = _png16(rgb16, 2)
    png = raw[:33] + _png_chunk(b"tRNS", struct.pack(">HHH", 65535, 0, 0)) + raw[33:]
    im = Image.open(io.BytesIO(png))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AecodecWarning)
        first, second = aecodec.compress(im, quality=2), aecodec.compress(im, quality=2)
        copy = aecodec.compress(im.copy(), quality=2)  # loaded, no layout: the key above 255 proves 16-bit
    assert first == second
    assert unpack(first).header.mode == unpack(copy).header.mode == "RGBA"
    a = np.asarray(aecodec.decompress(copy))[:, :, 3]
    assert (a[:, :8] == 0).all() and (a[:, 8:] == 255).all()


def test_big_endian_16_bit_is_16_bit():
    v = np.arange(200, dtype=np.uint16).reshape(10, 20)
    little, big = aecodec.image.planes_from_array(v.astype("<u2")), aecodec.image.planes_from_array(v.astype(">u2"))
    assert np.array_equal(little.rgb, big.rgb) and big.rgb.max() == 1 and big.notes
    buf = io.BytesIO()
    Image.frombytes("I;16B", (20, 10), v.astype(">u2").tobytes()).save(buf, "TIFF")
    buf.seek(0)
    assert open_image(buf).rgb.max() == 1  # a big-endian ("MM") 16-bit TIFF, as a PNG would be


def test_grey_alpha_and_single_channel_arrays(photo):
    la = aecodec.decompress(aecodec.compress(Image.fromarray(photo).convert("LA"), quality=4))
    arr = np.asarray(la)
    assert arr.shape[2] == 2
    back = aecodec.decompress(aecodec.compress(arr, quality=4))  # the library's own LA output goes back in
    assert back.mode == "LA" and np.array_equal(np.asarray(back)[:, :, 1], arr[:, :, 1])
    one = aecodec.decompress(aecodec.compress(arr[:, :, :1], quality=4))
    assert one.mode == "L" and one.size == la.size
    ramp = (np.arange(photo.shape[1])[None, :] * 5 % 256).repeat(photo.shape[0], 0).astype(np.uint8)
    rgba = aecodec.decompress(aecodec.compress(np.dstack([photo, ramp]), quality=4))
    assert rgba.mode == "RGBA" and np.array_equal(np.asarray(rgba)[..., 3], ramp)  # the 4th channel is the alpha
    with pytest.raises(ImageError, match="HxWx2"):
        aecodec.compress(np.zeros((4, 4, 5), np.uint8))


def test_a_lazily_opened_image_that_fails_to_load_is_an_image_error(tmp_path, photo):
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "QOI")
    with pytest.raises(ImageError, match="cannot read the image"):
        aecodec.compress(Image.open(io.BytesIO(buf.getvalue()[:-40])))
    Image.fromarray(photo).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as im:
        pass
    with pytest.raises(ImageError, match="cannot read the image"):
        aecodec.compress(im)  # used after its with-block closed the file


def test_compress_to_size_needs_a_size(photo):
    with pytest.raises(ValueError, match="max_bytes"):
        aecodec.compress_to_size(photo, None)


def test_saving_through_pillow_keeps_the_error_class(tmp_path, photo, monkeypatch):
    from aecodec import api

    def too_big(*a, **k):
        raise aecodec.SizeError("too big")

    monkeypatch.setattr(api, "compress_planes", too_big)
    with pytest.raises(aecodec.SizeError, match="cannot save as .aec: too big"):
        Image.fromarray(photo).save(tmp_path / "x.aec")


def test_info_counts_bytes_of_a_wide_memoryview(photo):
    for q in aecodec.QUALITIES:
        d = aecodec.compress(photo, quality=q)
        if len(d) % 2 == 0:
            break
    else:
        pytest.skip("no level gave a file of an even number of bytes")
    i = aecodec.info(memoryview(d).cast("H"))
    assert i["file_bytes"] == len(d) and i["bpp"] == pytest.approx(8 * len(d) / (photo.shape[0] * photo.shape[1]))


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_colour_key_of_low_bit_grey_at_every_depth(bits):
    """Pillow scales 1-, 2- and 4-bit grey to 0..255 (x255, x85, x17) but not the key: it is scaled too."""
    levels = (np.arange(16)[None, :] % (1 << bits)).repeat(8, 0).astype(np.uint8)  # 16 x 8
    key = 1
    per = 8 // bits
    rows = b"".join(b"\x00" + bytes(int("".join(f"{v:0{bits}b}" for v in r[i:i + per]), 2) for i in range(0, 16, per))
                    for r in levels)
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 8, bits, 0, 0, 0, 0))
           + _png_chunk(b"tRNS", struct.pack(">H", key)) + _png_chunk(b"IDAT", zlib.compress(rows))
           + _png_chunk(b"IEND", b""))
    p = open_image(io.BytesIO(png))
    assert p.mode == "LA" and np.array_equal(p.alpha == 0, levels == key)


def test_a_profile_of_another_colour_space_is_not_kept_after_conversion():
    """LAB / HSV are converted to RGB: their ICC profile described the old space, so it goes (YCbCr and
    RGBX keep theirs: the same RGB primaries)."""
    for mode, kept in (("LAB", False), ("HSV", False), ("YCbCr", True), ("RGBX", True)):
        im = Image.new(mode, (16, 16))
        im.info["icc_profile"] = _srgb_icc()
        p = aecodec.image.to_planes(im)
        assert (p.icc is not None) == kept, mode
        out = aecodec.decompress(aecodec.compress(im, quality=1))
        assert ("icc_profile" in out.info) == kept, mode


def test_the_remembered_layout_does_not_outlive_edits_frames_or_other_files():
    """The sample layout kept on an image object (see the test above) is for its frame, and a 16-bit
    grey+alpha image drawn on in colour since is coded in colour."""
    from PIL import ImageDraw

    la16 = np.zeros((8, 16, 2), np.uint16)
    la16[..., 0], la16[..., 1] = 30000, 65535
    im = Image.open(io.BytesIO(_png16(la16, 4)))  # Pillow opens it as RGBA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AecodecWarning)
        assert unpack(aecodec.compress(im, quality=1)).header.mode == "LA"
        ImageDraw.Draw(im).rectangle((0, 0, 7, 7), fill=(255, 0, 0, 255))
        out = aecodec.decompress(aecodec.compress(im, quality=8))
    assert out.mode == "RGBA" and np.asarray(out)[2, 2, 0] > 200 and np.asarray(out)[2, 2, 1] < 60
    # an 8-bit RGB file whose (malformed) key is above 255: its layout says 8 bits, so no 16-bit guess
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, :8] = (1, 0, 0)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    png = buf.getvalue()
    png = png[:33] + _png_chunk(b"tRNS", struct.pack(">HHH", 300, 0, 0)) + png[33:]
    assert open_image(io.BytesIO(png)).mode == "RGB"


def test_a_palette_with_a_transparent_index_gives_rgba_whatever_the_palette_mode(photo):
    """An index marked transparent (tRNS) that no pixel uses: RGBA as before, for an RGB palette and
    for an RGBA one alike."""
    q = Image.fromarray(photo).quantize(16)
    q.info["transparency"] = 255  # an index no pixel has
    assert to_mode(q) == "RGBA"
    q.putpalette([v for c in np.asarray(q.getpalette()).reshape(-1, 3) for v in (*c, 255)], "RGBA")
    assert to_mode(q) == "RGBA"


def to_mode(im):
    return aecodec.image.to_planes(im).mode


def test_the_remembered_layout_is_the_current_frame_s():
    a = Image.frombytes("I;16", (16, 8), np.full((8, 16), 30000, np.uint16).tobytes())
    buf = io.BytesIO()
    a.save(buf, "TIFF", save_all=True, append_images=[Image.new("LA", (16, 8), (100, 200))])
    im = Image.open(io.BytesIO(buf.getvalue()))
    assert any("16-bit" in n for n in aecodec.image.to_planes(im).notes)
    im.seek(1)  # an 8-bit page: no 16-bit note carried over from page 1
    p = aecodec.image.to_planes(im)
    assert p.mode == "LA" and not any("16-bit" in n for n in p.notes)
    im = Image.open(io.BytesIO(buf.getvalue()))
    aecodec.image.to_planes(im)  # page 1 seen (and its layout remembered) ...
    im.seek(1)
    im.load()  # ... then page 2 loaded before aecodec sees it: page 1's layout is not page 2's
    assert not any("16-bit" in n for n in aecodec.image.to_planes(im).notes)


def test_a_bug_in_the_conversion_is_not_called_a_bad_file(tmp_path, photo, monkeypatch):
    """Only reading the file is the file's fault: an exception in aecodec's own conversion propagates."""
    Image.fromarray(photo).save(tmp_path / "p.png")

    def bug(*a, **k):
        raise TypeError("a bug in aecodec")

    monkeypatch.setattr(aecodec.image, "_colour_key_alpha", bug)
    for call in (lambda: open_image(tmp_path / "p.png"), lambda: aecodec.image.to_planes(Image.open(tmp_path / "p.png"))):
        with pytest.raises(TypeError, match="a bug in aecodec"):
            call()
