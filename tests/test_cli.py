"""The command line through click's CliRunner: outputs, exit codes, no overwrites, no partial files."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aecodec.cli import main

from conftest import psnr


@pytest.fixture()
def work(tmp_path, photo_crops):
    p = tmp_path / "photo.png"
    Image.fromarray(photo_crops[0][:96, :128]).save(p)
    return tmp_path


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def test_help_and_version():
    r = run("--help")
    assert r.exit_code == 0 and "compress" in r.output and "decompress" in r.output
    r = run("--version")
    assert r.exit_code == 0
    assert "aecodec" in r.output and "file format" in r.output and "torch" in r.output and "compressai" in r.output
    for cmd in ("compress", "decompress", "info"):
        assert run(cmd, "--help").exit_code == 0


def test_compress_decompress_default_names(work):
    r = run("compress", work / "photo.png")
    assert r.exit_code == 0, r.output
    assert (work / "photo.aec").exists()
    assert "bpp" in r.stderr
    # decompressing next to the original would overwrite photo.png: refused without -f
    r = run("decompress", work / "photo.aec")
    assert r.exit_code == 2 and "exists" in r.stderr
    r = run("decompress", work / "photo.aec", "-o", work / "back.png")
    assert r.exit_code == 0, r.output
    a, b = Image.open(work / "photo.png"), Image.open(work / "back.png")
    assert a.size == b.size and psnr(a, b) > 15
    r = run("decompress", work / "photo.aec", "-f")
    assert r.exit_code == 0


def test_output_format_from_extension(work):
    run("compress", work / "photo.png")
    for ext, fmt in ((".bmp", "BMP"), (".tiff", "TIFF"), (".webp", "WEBP")):
        r = run("decompress", work / "photo.aec", "-o", work / f"out{ext}")
        assert r.exit_code == 0, r.output
        assert Image.open(work / f"out{ext}").format == fmt
    r = run("decompress", work / "photo.aec", "-o", work / "out.xyz")
    assert r.exit_code == 2 and not (work / "out.xyz").exists()


def test_no_overwrite_without_force(work):
    (work / "photo.aec").write_bytes(b"precious")
    r = run("compress", work / "photo.png")
    assert r.exit_code == 2 and "exists" in r.stderr
    assert (work / "photo.aec").read_bytes() == b"precious"
    r = run("compress", work / "photo.png", "-f")
    assert r.exit_code == 0 and (work / "photo.aec").read_bytes()[:4] == b"\x8aAEC"


@pytest.mark.parametrize("q", ["0", "9", "999", "x"])
def test_bad_quality_is_usage_error(work, q):
    r = run("compress", work / "photo.png", "-q", q)
    assert r.exit_code == 2
    assert not (work / "photo.aec").exists()


def test_bad_inputs_exit_1_no_output(work):
    (work / "empty.png").write_bytes(b"")
    (work / "text.png").write_text("hello, not an image\n")
    (work / "rand.png").write_bytes(np.random.default_rng(0).bytes(5000))
    for name in ("empty.png", "text.png", "rand.png", "missing.png"):
        r = run("compress", work / name)
        assert r.exit_code == 1, (name, r.output)
        assert "Traceback" not in r.output and r.stderr.count("\n") == 1
        assert not (work / name).with_suffix(".aec").exists()
    r = run("compress", work)
    assert r.exit_code == 1


def test_corrupt_aec_exit_1_no_output(work):
    run("compress", work / "photo.png")
    good = (work / "photo.aec").read_bytes()
    cases = {"trunc.aec": good[: len(good) // 2], "flip.aec": good[:-20] + bytes([good[-20] ^ 1]) + good[-19:],
             "junk.aec": good + b"junk", "magic.aec": b"XXXX" + good[4:], "empty.aec": b""}
    for name, data in cases.items():
        (work / name).write_bytes(data)
        r = run("decompress", work / name)
        assert r.exit_code == 1, (name, r.output)
        assert "Traceback" not in r.output and r.stderr.startswith("aecodec: error:")
        assert not (work / name).with_suffix(".png").exists()
        assert not list(work.glob(".*.part"))


def test_missing_output_directory(work):
    r = run("compress", work / "photo.png", "-o", work / "nope" / "x.aec")
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_info(work):
    run("compress", work / "photo.png", "-q", "3")
    r = run("info", work / "photo.aec")
    assert r.exit_code == 0 and "128x96" in r.output and "quality   3" in r.output
    d = json.loads(run("info", work / "photo.aec", "--json").output)
    assert d["width"] == 128 and d["height"] == 96 and d["quality"] == 3 and d["mode"] == "RGB"
    assert d["file_bytes"] == (work / "photo.aec").stat().st_size


def test_stdin_stdout(work):
    src = (work / "photo.png").read_bytes()
    r = CliRunner().invoke(main, ["compress", "-", "--quiet"], input=src)
    assert r.exit_code == 0
    aec = r.stdout_bytes
    assert aec[:4] == b"\x8aAEC"
    r = CliRunner().invoke(main, ["decompress", "-", "--quiet"], input=aec)
    assert r.exit_code == 0 and r.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from aecodec.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'compressai' not in sys.modules, 'heavy import'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
