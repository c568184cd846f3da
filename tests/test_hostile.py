"""Damaged and hostile .aec files: always a clean FormatError (CLI: one line, exit 1), never a
crash, a hang, a traceback or a silently wrong image; huge claimed sizes refused up front."""

import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

import aecodec
from aecodec import coding, rans
from aecodec.cli import main
from aecodec.format import FormatError, Header, pack, unpack
from aecodec.weights import load_model


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def small(photo_crops):
    """A small valid file (RGB) and one with alpha."""
    rgb = photo_crops[0][:40, :72]
    rgba = np.dstack([photo_crops[-1][:20, :30], np.arange(600, dtype=np.uint8).reshape(20, 30)])
    return aecodec.compress(rgb, quality=4), aecodec.compress(rgba, quality=2)


def _recrc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _with_chunks(data: bytes, **replace) -> bytes:
    c = unpack(data)
    chunks = [(t, replace.get(t.decode(), b)) for t, b in c.chunks.items()]
    return pack(c.header, chunks)


def test_every_truncation_refused(small):
    for data in small:
        for n in range(len(data)):
            with pytest.raises(FormatError):
                aecodec.decompress(data[:n])


def test_every_single_bit_flip_refused(small):
    data = small[0]
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                aecodec.decompress(bytes(bad))


def test_trailing_junk_and_random_bytes_refused(small):
    rng = np.random.default_rng(0)
    for junk in (b"\x00", b"junk", rng.bytes(1000), small[0]):
        with pytest.raises(FormatError):
            aecodec.decompress(small[0] + junk)
    for n in (0, 1, 3, 4, 50, 5000):
        with pytest.raises(FormatError):
            aecodec.decompress(rng.bytes(n))
        with pytest.raises(FormatError):
            aecodec.decompress(b"\x8aAEC" + rng.bytes(n))


@pytest.mark.parametrize("target", ["YSTR", "ZSTR"])
@pytest.mark.parametrize("garbage", ["random", "zeros", "ones", "empty", "short", "truncated", "extended",
                                     "flipped", "swapped"])
def test_valid_header_garbage_payload_with_valid_crc(small, target, garbage):
    """The hard case: the CRC is right, the entropy-coded payload is not what the encoder wrote."""
    c = unpack(small[0])
    good = c.chunks[target.encode()]
    rng = np.random.default_rng(zlib.crc32(f"{target}{garbage}".encode()))
    blob = {"random": rng.bytes(len(good)), "zeros": bytes(len(good)), "ones": b"\xff" * len(good),
            "empty": b"", "short": b"\xff" * 10, "truncated": good[:len(good) // 2],
            "extended": good + b"\x00\x00\x00\x00",
            "flipped": good[:5] + bytes([good[5] ^ 0x10]) + good[6:],
            "swapped": c.chunks[b"ZSTR" if target == "YSTR" else b"YSTR"]}[garbage]
    bad = _with_chunks(small[0], **{target: blob})
    t = time.time()
    with pytest.raises(FormatError, match="corrupt"):
        aecodec.decompress(bad)
    assert time.time() - t < 60


def test_garbage_alpha_and_zlib_bomb(small):
    bomb = zlib.compress(b"\x00" * (50 * 2**20), 9)  # 50 MB of zeros in ~50 kB
    right = zlib.compress(b"\xff" * 600)  # the 20 x 30 plane, as FORMAT.md wants it but for what follows:
    for blob in (b"", b"garbage", zlib.compress(b"\x00" * 10), bomb, right + b"x", zlib.compress(b"\xff" * 601),
                 zlib.compress(b"\xff" * 600, wbits=-15), zlib.compress(b"\xff" * 600, wbits=31)):  # raw, gzip
        with pytest.raises(FormatError, match="alpha"):
            aecodec.decompress(_with_chunks(small[1], ALPH=blob))
    assert aecodec.decompress(_with_chunks(small[1], ALPH=right)).getchannel("A").getextrema() == (255, 255)


def test_garbage_icc_is_dropped_not_fatal(small, tmp_path):
    """Dropped with a warning (an empty chunk counts as none, as an empty YIDX does)."""
    import warnings

    from click.testing import CliRunner

    from aecodec.cli import main

    c = unpack(small[0])
    for blob, warned in ((b"", False), (b"not zlib", True), (zlib.compress(b"\x00" * (17 * 2**20)), True),
                         (zlib.compress(b"") + b"x", True)):
        data = pack(c.header, list(c.chunks.items()) + [(b"iCCP", blob)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = aecodec.decompress(data)
        assert out.size == (72, 40) and "icc_profile" not in out.info
        assert any("ICC profile" in str(w.message) for w in caught) == warned
    (tmp_path / "x.aec").write_bytes(data)
    r = CliRunner().invoke(main, ["decompress", str(tmp_path / "x.aec")])
    assert r.exit_code == 0 and "warning" in r.stderr and "ICC profile" in r.stderr and (tmp_path / "x.png").exists()


def test_absurd_dimensions_refused_before_allocation(small, monkeypatch):
    """A header claiming 1,000,000 x 1,000,000 (or just over the limit) is refused before the model
    or the entropy decoder run, and quickly."""
    c = unpack(small[0])
    called = []
    monkeypatch.setattr(coding, "decode", lambda *a, **k: called.append(1))
    for w, h in ((1_000_000, 1_000_000), (12000, 12000), (2**14, 2**13 + 1)):
        c.header.width, c.header.height = w, h
        ph, pw = -(-h // 64), -(-w // 64)
        c.header.y_shape, c.header.z_shape = (ph * 4, pw * 4), (ph, pw)
        data = pack(c.header, list(c.chunks.items()))
        t = time.time()
        with pytest.raises(FormatError, match="limit"):
            aecodec.decompress(data)
        assert time.time() - t < 1.0
    assert not called
    # raising the limit lets the (garbage) payload reach the decoder, which refuses it
    c.header.width, c.header.height, c.header.y_shape, c.header.z_shape = 3000, 2000, (128, 188), (32, 47)
    data = pack(c.header, list(c.chunks.items()))
    with pytest.raises(FormatError, match="limit"):
        aecodec.decompress(data, max_pixels=1_000_000)
    monkeypatch.undo()
    with pytest.raises(FormatError, match="corrupt"):
        aecodec.decompress(data, max_pixels=None)


def test_header_beyond_the_format_refused():
    h = Header(model_id="m", quality=1, mode="RGB", width=1, height=1, y_shape=(4, 4), z_shape=(1, 1))
    data = bytearray(pack(h, [(b"ZSTR", b"z"), (b"YSTR", b"y")]))
    off = 7 + 1 + 2
    data[off:off + 4] = struct.pack(">I", 2**31)
    with pytest.raises(FormatError, match="impossible size"):
        aecodec.decompress(_recrc(bytes(data[:-4])))


def test_cli_hostile_files_exit_1_one_line(tmp_path, small):
    c = unpack(small[0])
    cases = {
        "trunc.aec": small[0][:len(small[0]) // 3],
        "flip.aec": small[0][:30] + bytes([small[0][30] ^ 4]) + small[0][31:],
        "junk.aec": small[0] + b"\x00junk",
        "garbage-payload.aec": _with_chunks(small[0], YSTR=b"\xff" * 10),
        "random.aec": np.random.default_rng(1).bytes(300),
        "huge.aec": _recrc(small[0][:-4][:7 + len(c.header.model_id) + 2] + struct.pack(">II", 10**6, 10**6)
                           + small[0][:-4][7 + len(c.header.model_id) + 10:]),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    r = run("decompress", *sorted(tmp_path.glob("*.aec")))
    assert r.exit_code == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("aecodec: error:")]
    assert len(lines) == len(cases), r.stderr
    assert "Traceback" not in r.output
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*.part"))


# -- the entropy decoder's isolation -------------------------------------------------------------------

def test_compressai_decoder_really_is_unsafe_in_process():
    """Why the worker exists: on a short string compressai's decoder reads past its buffer."""
    code = ("import numpy as np, aecodec._deps as d; d.import_compressai()\n"
            "from compressai import ans\n"
            "from aecodec.weights import load_model\n"
            "gc = load_model().gaussian_conditional\n"
            "idx = np.random.default_rng(0).integers(0, 64, 300000).tolist()\n"
            "out = ans.RansDecoder().decode_with_indexes(b'\\xff' * 10, idx, gc._quantized_cdf.tolist(),"
            " gc._cdf_length.tolist(), gc._offset.tolist())\n"
            "print(max(abs(v) for v in out))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    crashed = r.returncode < 0
    garbage = r.returncode == 0 and int(r.stdout.split()[-1]) > 1 << 24
    assert crashed or garbage, (r.returncode, r.stdout[-200:])


def test_worker_isolates_the_same_input():
    gc = load_model().gaussian_conditional
    idx = np.random.default_rng(0).integers(0, 64, 300000)
    with pytest.raises(FormatError, match="corrupt"):
        rans.decode(b"\xff" * 10, idx, rans.Tables.of(gc))


def test_worker_crash_and_hang_become_format_errors(monkeypatch):
    gc = load_model().gaussian_conditional
    tables = rans.Tables.of(gc)
    idx = np.zeros(100, np.uint16)
    monkeypatch.setattr(rans, "_worker_works", [True])  # (known to work: failures are the string's)
    monkeypatch.setattr(rans, "_worker_command", lambda: [sys.executable, "-c",
                                                           "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    with pytest.raises(FormatError, match="crashed"):
        rans.decode(b"\x00" * 16, idx, tables)
    monkeypatch.setattr(rans, "_worker_command", lambda: [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(rans, "TIMEOUT_BASE_S", 1.0)
    t = time.time()
    with pytest.raises(FormatError, match="did not finish"):
        rans.decode(b"\x00" * 16, idx, tables)
    assert time.time() - t < 20
    monkeypatch.setattr(rans, "_worker_command", lambda: [sys.executable, "-c",
                                                           "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"])
    with pytest.raises(FormatError, match="boom"):
        rans.decode(b"\x00" * 16, idx, tables)


def test_reencode_check_accepts_exactly_the_encoders_strings():
    gc = load_model().gaussian_conditional
    tables = rans.Tables.of(gc)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 64, 5000).astype(np.uint16)
    sym = np.round(rng.normal(0, gc.scale_table.numpy()[idx])).astype(np.int32)
    sym[:3] = [400, -900, 12345]  # bypass-coded values
    s = rans.encode(sym, idx, tables)
    assert np.array_equal(rans.decode(s, idx, tables), sym)
    for bad in (s[:-4], s + b"\x00" * 4, s[:-1], b"\x00" + s[1:], s[:8]):
        with pytest.raises(FormatError):
            rans.decode(bad, idx, tables)
    with pytest.raises(ValueError):
        rans.encode(np.array([1 << 25], np.int32), np.array([0]), tables)


def test_pillow_plugin_reports_damage_as_oserror(small):
    import io

    from PIL import Image

    bad = _with_chunks(small[0], YSTR=b"\x00" * 40)
    with Image.open(io.BytesIO(bad)) as im:
        assert im.size == (72, 40)
        with pytest.raises(OSError, match="corrupt"):
            im.load()


def test_non_finite_scales_are_refused_like_non_finite_means(small, monkeypatch):
    """FORMAT.md: non-finite entropy parameters make a file invalid (a NaN scale used to pick the last
    table silently; only the means were checked)."""
    from aecodec import coding

    real = coding._h_s64

    def nan_scales(model):
        h = real(model)

        def f(z):
            out = h(z).clone()
            out[:, 0, 0, 0] = float("nan")  # channel 0 is a scale (the first M channels)
            return out
        return f

    monkeypatch.setattr(coding, "_h_s64", nan_scales)
    with pytest.raises(FormatError, match="not finite"):
        aecodec.decompress(small[0])
