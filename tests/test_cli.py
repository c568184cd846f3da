"""The command line through click's CliRunner: outputs, exit codes, no overwrites, no partial files."""

import json
import shutil

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aecodec.cli import _human, main

from conftest import psnr


@pytest.fixture()
def work(tmp_path, photo_crops):
    p = tmp_path / "photo.png"
    Image.fromarray(photo_crops[0][:96, :128]).save(p)
    return tmp_path


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False, prog_name="aecodec")


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


@pytest.mark.parametrize("q", ["0", "9", "999", "x", "8.5", "0.5", "6.555", "6.", "-1", "nan", "1e0", "6,5"])
def test_bad_quality_is_usage_error(work, q):
    r = run("compress", work / "photo.png", "-q", q)
    assert r.exit_code == 2
    comma = " with a decimal point" if q == "6,5" else ""
    assert r.stderr == (f"aecodec compress: error: Invalid value for '-q' / '--quality': '{q}': the quality is a "
                        f"number from 1 to 8, at most two decimals{comma} (6, 6.5, 6.25) (see aecodec compress --help)\n")
    assert not (work / "photo.aec").exists()


def test_quality_between_levels(work):
    import aecodec

    r = run("compress", work / "photo.png", "-q", "6.5", "-o", work / "a.aec")
    assert r.exit_code == 0 and ", q6.5, " in r.stderr, r.output
    data = (work / "a.aec").read_bytes()
    assert data == aecodec.compress(np.asarray(Image.open(work / "photo.png")), quality=6.5)
    assert "quality   6.5\n" in run("info", work / "a.aec").output
    assert json.loads(run("info", work / "a.aec", "--json").output)["quality"] == 6.5
    r = run("compress", work / "photo.png", "-q", ".25", "-o", work / "b.aec")  # under 1
    assert r.exit_code == 2
    r = run("compress", work / "photo.png", "-q", "1.05", "-o", work / "b.aec")
    assert r.exit_code == 0 and aecodec.info((work / "b.aec").read_bytes())["quality"] == 1.05
    r = run("decompress", work / "a.aec", "-o", work / "a.png")
    assert r.exit_code == 0 and np.array_equal(np.asarray(Image.open(work / "a.png")),
                                               np.asarray(aecodec.decompress(data)))


@pytest.mark.parametrize("args, prog, says", [
    (["compress", "--bogus", "x.png"], "aecodec compress", "No such option '--bogus'"),
    (["compress"], "aecodec compress", "Missing argument"),
    (["decompress", "x.aec", "-o"], "aecodec decompress", "'-o' requires an argument"),
    (["info"], "aecodec info", "Missing argument 'FILE'"),
    (["compress", "x.png", "-q"], "aecodec compress", "'-q' requires an argument"),
    (["export", "only-one"], "aecodec export", "Missing argument 'OUT'"),
    (["bench", "--bogus"], "aecodec bench", "No such option '--bogus'"),
    (["frob"], "aecodec", "No such command 'frob'"),
    (["--bogus"], "aecodec", "No such option '--bogus'"),
])
def test_usage_errors_are_one_line(args, prog, says):
    """click's own usage errors (parsing, missing arguments, unknown commands) are reported as
    aecodec's other errors are: one line naming the command and its --help, exit status 2."""
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"{prog}: error: ") and says in r.stderr, r.stderr
    assert r.stderr.rstrip().endswith(f"(see {prog} --help)"), r.stderr
    assert r.stdout == ""


def test_bare_aecodec_still_prints_the_help():
    r = run()
    assert r.exit_code == 2 and "Commands:" in r.output and "compress" in r.output


def test_gif_output_warns_that_colours_are_reduced(work):
    assert run("compress", work / "photo.png", "-q", "1").exit_code == 0
    r = run("decompress", work / "photo.aec", "-o", work / "photo.gif")
    assert r.exit_code == 0 and "reduced to a palette" in r.stderr, r.output
    r = run("decompress", work / "photo.aec", "-o", work / "photo2.png")
    assert "warning" not in r.stderr


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


def test_inputs_with_no_file_name_are_one_line(work, monkeypatch):
    """'.', '/', '..' and '' have no name to make an output name from: each is refused on its
    turn in one line (they were a ValueError traceback), and the other inputs still go on."""
    monkeypatch.chdir(work)
    for args in (["compress", "."], ["compress", "/"], ["compress", ".."], ["compress", ""],
                 ["decompress", "."], ["compress", "-d", str(work), "."]):
        r = run(*args)
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.count("\n") == 1 and ("is a directory" in r.stderr or "empty file name" in r.stderr), r.stderr
    r = run("compress", ".", "photo.png", "-q", "1")
    assert r.exit_code == 1 and (work / "photo.aec").exists() and "1 of 2 files failed: ." in r.stderr


def test_info_does_not_wait_on_a_terminal(tmp_path):
    """`aecodec info -` with a terminal as stdin refuses at once, as compress and decompress do
    (it hung waiting for input)."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-c", "from aecodec.cli import main; main()", "info", "-"],
                           stdin=follower, capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert r.returncode == 2 and "from a terminal" in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("args", [["info", "{aec}", "--json"], ["info", "{aec}"], ["--help"], ["--version"],
                                  ["compress", "--help"], ["train", "--help"], ["-m", "aecodec.train", "--help"],
                                  ["tools/rdcompare.py", "--help"], ["tools/rdcompare.py", "benchmarks/kodak"]])
def test_stdout_that_cannot_be_written_is_one_line(work, args):
    """`> /dev/full`: one line and exit 1, for the click commands, the argparse ones (whose help
    argparse would drop silently, exit 0) and the tools (print)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    aec = work / "p.aec"
    if not aec.exists():
        assert run("compress", work / "photo.png", "-q", "1", "-o", aec).exit_code == 0
    args = [a.format(aec=aec) for a in args]
    if args[0] == "-m" or args[0].startswith("tools/"):
        cmd = [sys.executable] + [str(ROOT / a) if a.startswith(("tools/", "benchmarks/")) else a for a in args]
    else:
        cmd = [sys.executable, "-c", "from aecodec.cli import main; main()"] + args
    with open("/dev/full", "wb") as full:
        r = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 1, (args, r.stderr)
    assert r.stderr.count("\n") == 1 and "<stdout>: cannot write (No space left on device)" in r.stderr, r.stderr


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


def test_export_of_a_missing_checkpoint_is_bad_data(work):
    """A missing input is exit 1 everywhere (click's exists=True made it a usage error, 2)."""
    for name, says in (("missing.pt", "no such file"), (".", "is a directory")):
        r = run("export", work / name, work / "w.safetensors")
        assert r.exit_code == 1 and says in r.stderr and r.stderr.count("\n") == 1, r.output
    assert not (work / "w.safetensors").exists()


def test_info(work):
    run("compress", work / "photo.png", "-q", "3")
    r = run("info", work / "photo.aec")
    assert r.exit_code == 0 and "128x96" in r.output and "quality   3" in r.output
    d = json.loads(run("info", work / "photo.aec", "--json").output)
    assert d["width"] == 128 and d["height"] == 96 and d["quality"] == 3 and d["mode"] == "RGB"
    assert d["file_bytes"] == (work / "photo.aec").stat().st_size
    assert d["decodable"] is True and "quality_problem" not in d


@pytest.mark.parametrize("quality", [0, 9])
def test_info_says_a_quality_the_model_lacks_cannot_decode(work, quality):
    """A header whose checksum is right but whose quality is not one of the model's levels:
    info says the file cannot be decoded (decompress refuses it), instead of reporting it fine."""
    import struct
    import zlib

    run("compress", work / "photo.png", "-q", "3")
    b = bytearray((work / "photo.aec").read_bytes())
    b[7 + b[6]] = quality  # the quality byte follows the model id (FORMAT.md)
    b[-4:] = struct.pack(">I", zlib.crc32(bytes(b[:-4])))
    (work / "bad.aec").write_bytes(bytes(b))
    d = json.loads(run("info", work / "bad.aec", "--json").output)
    assert d["quality"] == quality and d["decodable"] is False and "not a level" in d["quality_problem"]
    assert "cannot be decoded" in run("info", work / "bad.aec").output
    r = run("decompress", work / "bad.aec")
    assert r.exit_code == 1 and f"quality {quality} not in 1..8" in r.stderr


def test_info_says_a_quality_above_the_top_level_cannot_decode(work):
    """8.5: QFRC on the top level (no level above it to interpolate toward)."""
    import struct
    import zlib

    run("compress", work / "photo.png", "-q", "7.5")
    b = bytearray((work / "photo.aec").read_bytes())
    b[7 + b[6]] = 8
    b[-4:] = struct.pack(">I", zlib.crc32(bytes(b[:-4])))
    (work / "bad.aec").write_bytes(bytes(b))
    d = json.loads(run("info", work / "bad.aec", "--json").output)
    assert d["quality"] == 8.5 and d["decodable"] is False and "not between levels" in d["quality_problem"]
    r = run("decompress", work / "bad.aec")
    assert r.exit_code == 1 and "quality 8.5 not in 1..8" in r.stderr and not (work / "bad.png").exists()


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


# -- many files ----------------------------------------------------------------------------------------

@pytest.fixture()
def many(tmp_path, photo_crops):
    for i, name in enumerate(("a.png", "b.jpg", "c.webp")):
        Image.fromarray(photo_crops[i % len(photo_crops)][:64, :80]).save(tmp_path / name)
    (tmp_path / "bad.png").write_text("not an image")
    return tmp_path


def test_batch_compress_one_failure_does_not_stop_the_others(many):
    names = ["a.png", "bad.png", "b.jpg", "missing.png", "c.webp"]
    r = run("compress", *[many / n for n in names], "-q", "2", "--progress")
    assert r.exit_code == 1
    for n in ("a", "b", "c"):
        assert (many / f"{n}.aec").read_bytes()[:4] == b"\x8aAEC"
    assert not (many / "bad.aec").exists() and not (many / "missing.aec").exists()
    errors = [line for line in r.stderr.splitlines() if line.startswith("aecodec: error:")]
    assert len(errors) == 2 and "bad.png" in errors[0] and "missing.png" in errors[1]
    assert "2 of 5 files failed" in r.stderr
    # the progress bar was drawn, with the number of files (its refreshes are time-throttled)
    assert "file" in r.stderr and "/5 " in r.stderr
    assert "Traceback" not in r.output


def test_the_time_that_loaded_the_model_says_so(many, monkeypatch):
    from aecodec import weights as W

    monkeypatch.setattr(W, "_cache", {})  # a fresh process: the first file loads the model
    r = run("compress", many / "a.png", many / "b.jpg", "-q", "1")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if " -> " in line]
    assert "(with loading the model)" in lines[0] and "(with loading" not in lines[1], lines


def test_batch_decompress_and_out_dir(many):
    assert run("compress", many / "a.png", many / "b.jpg", "-q", "1").exit_code == 0
    (many / "broken.aec").write_bytes((many / "a.aec").read_bytes()[:-7])
    out = many / "out"
    out.mkdir()
    r = run("decompress", many / "a.aec", many / "broken.aec", many / "b.aec", "-d", out)
    assert r.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert r.stderr.count("aecodec: error:") == 1 and "broken.aec" in r.stderr
    # all good: exit 0; existing outputs are failures without -f, and are kept
    assert run("decompress", many / "a.aec", many / "b.aec", "-d", out, "-f").exit_code == 0
    r = run("decompress", many / "a.aec", many / "b.aec", "-d", out)
    assert r.exit_code == 2 and r.stderr.count("exists") == 2


def test_batch_usage_errors(many):
    r = run("compress", many / "a.png", many / "b.jpg", "-o", many / "x.aec")
    assert r.exit_code == 2 and not (many / "x.aec").exists()
    r = run("compress", many / "a.png", "-", "--quiet")
    assert r.exit_code == 2
    r = run("compress", many / "bad.png", "missing.png", "-d", many / "none")  # nothing to write: nothing made
    assert r.exit_code == 1 and not (many / "none").exists()
    r = run("compress", many / "a.png", "-d", many / "new" / "dir")  # made, as `compress *.jpg -d out/` suggests
    assert r.exit_code == 0 and (many / "new" / "dir" / "a.aec").is_file(), r.output
    r = run("compress", many / "a.png", many / "b.jpg", "-d", many / "a.png" / "sub")  # cannot be made: said once
    assert r.exit_code == 1 and r.stderr.count("cannot create the output directory") == 1, r.output
    r = run("info", many / "new" / "dir" / "a.aec", "--heatmap", many / "none" / "h.png")  # no -d left over
    assert r.exit_code == 1 and not (many / "none").exists()
    (many / "dangling").symlink_to(many / "nowhere")
    r = run("compress", many / "a.png", "-d", many / "dangling")
    assert r.exit_code == 2 and "broken symbolic link" in r.stderr and not (many / "nowhere").exists()
    # two inputs that would write the same output: the second is refused, not overwritten
    Image.open(many / "a.png").save(many / "a.bmp")
    r = run("compress", many / "a.png", many / "a.bmp", "-f")
    assert r.exit_code == 2 and "also the output" in r.stderr
    assert (many / "a.aec").exists()


# -- writes that fail or are interrupted ---------------------------------------------------------------

def test_failed_write_leaves_nothing(work, monkeypatch):
    import os

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    r = run("compress", work / "photo.png")
    assert r.exit_code == 1 and "No space left" in r.stderr
    assert not (work / "photo.aec").exists() and not list(work.glob(".*.part"))


def test_keyboard_interrupt_leaves_nothing(work, monkeypatch):
    import aecodec.api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(aecodec.api, "compress_planes", interrupted)
    r = CliRunner().invoke(main, ["compress", str(work / "photo.png")])
    assert r.exit_code == 130 and "interrupted" in r.stderr
    assert not (work / "photo.aec").exists() and not list(work.glob(".*.part"))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_during_a_real_run_leaves_nothing(tmp_path, photo_crops, sig):
    """A real process, a real signal in the middle of coding: no output, no temporary file, no traceback."""
    import signal
    import subprocess
    import sys
    import time

    big = np.tile(photo_crops[0], (6, 6, 1))  # 1536 x 1536: several seconds of work
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(photo_crops[0][:64, :64]).save(tmp_path / "small.png")
    p = subprocess.Popen([sys.executable, "-c", "from aecodec.cli import main; main()", "compress",
                          str(tmp_path / "small.png"), str(tmp_path / "big.png"), "-q", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # a foreground command: Ctrl-C applies even when pytest itself runs in the
                         # background (nohup ... &), whose children inherit an ignored SIGINT
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (tmp_path / "small.aec").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # now inside big.png
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=120)
    assert p.returncode == (130 if sig == "SIGINT" else 143), err
    assert "Traceback" not in err
    assert (tmp_path / "small.aec").exists(), "the finished file stays"
    assert not (tmp_path / "big.aec").exists()
    assert not list(tmp_path.glob(".*.part"))


# -- weights problems are one-line errors --------------------------------------------------------------

@pytest.mark.parametrize("damage", ["flip", "truncate", "swap", "missing"])
def test_damaged_weights_clear_error(work, tmp_path_factory, monkeypatch, damage):
    from aecodec import weights as W

    r = run("compress", work / "photo.png")
    assert r.exit_code == 0
    wdir = tmp_path_factory.mktemp("weights")
    for f in W.weights_dir().iterdir():
        if f.suffix in (".json", ".safetensors"):
            shutil.copy(f, wdir / f.name)
    manifest = W.read_manifest(wdir)
    wfile = wdir / manifest["models"][manifest["default"]]["file"]
    blob = bytearray(wfile.read_bytes())
    if damage == "flip":
        blob[len(blob) // 3] ^= 0x20
        wfile.write_bytes(bytes(blob))
    elif damage == "truncate":
        wfile.write_bytes(bytes(blob[: len(blob) // 2]))
    elif damage == "swap":  # another valid safetensors file under the same name
        from safetensors.torch import load, save

        state = load(bytes(blob))
        k = sorted(state)[0]
        state[k] = state[k] * 0
        wfile.write_bytes(save(state))
    else:
        wfile.unlink()
    monkeypatch.setenv("AECODEC_WEIGHTS_DIR", str(wdir))
    monkeypatch.setattr(W, "_cache", {})
    for args in (("compress", work / "photo.png", "-o", work / "again.aec"),
                 ("decompress", work / "photo.aec", "-o", work / "again.png")):
        r = run(*args)
        assert r.exit_code == 1, r.output
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.output
        assert ("corrupted or was replaced" in r.stderr) if damage != "missing" else ("missing" in r.stderr)
    assert not (work / "again.aec").exists() and not (work / "again.png").exists()


def test_decompress_unreadable_inputs(work):
    (work / "d.aec").mkdir()
    (work / "text.aec").write_text("hello\n")
    for name in ("d.aec", "missing.aec", "text.aec"):
        r = run("decompress", work / name, "-o", work / "out.png")
        assert r.exit_code == 1, (name, r.output)
        assert r.stderr.startswith("aecodec: error:") and r.stderr.count("\n") == 1
        assert not (work / "out.png").exists()


def test_compress_writes_aec_names_only(work):
    for name in ("y.png", "y.jpg", "y"):
        r = run("compress", work / "photo.png", "-o", work / name)
        assert r.exit_code == 2 and "written as .aec" in r.stderr, r.output
        assert not (work / name).exists()
    assert run("compress", work / "photo.png", "-o", work / "Y.AEC").exit_code == 0


def test_an_aec_file_given_to_compress_is_refused(work):
    assert run("compress", work / "photo.png", "-q", "2").exit_code == 0
    (work / "copy.png").write_bytes((work / "photo.aec").read_bytes())  # whatever its name
    for src in (work / "photo.aec", work / "copy.png"):
        r = run("compress", src, "-o", work / "again.aec")
        assert r.exit_code == 2 and "already an .aec file" in r.stderr and r.stderr.count("\n") == 1, r.output
        assert not (work / "again.aec").exists()
    r = run("compress", "-", input=(work / "photo.aec").read_bytes())
    assert r.exit_code == 2 and "already an .aec file" in r.stderr and not r.stdout_bytes
    before = (work / "photo.aec").read_bytes()
    r = run("compress", work / "photo.aec")  # its default output is itself: still the message that helps
    assert r.exit_code == 2 and "already an .aec file" in r.stderr and "overwrite" not in r.stderr, r.output
    assert (work / "photo.aec").read_bytes() == before


def test_pipe_and_device_outputs_are_written_into_not_replaced(work):
    import os
    import stat
    import threading

    import aecodec

    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes")
    pipe = work / "pipe"
    os.mkfifo(pipe)

    def through_pipe(*args):
        got = {}
        reader = threading.Thread(target=lambda: got.setdefault("data", pipe.read_bytes()))
        reader.start()
        r = run(*args, "-o", pipe)  # no -f and no extension needed: nothing is overwritten
        reader.join(60)
        return r, got.get("data")

    r, data = through_pipe("compress", work / "photo.png", "-q", "1")
    assert r.exit_code == 0 and data == aecodec.compress(np.asarray(Image.open(work / "photo.png")), quality=1)
    (work / "x.aec").write_bytes(data)
    r, png = through_pipe("decompress", work / "x.aec")  # a pipe without an extension gets PNG
    assert r.exit_code == 0 and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)  # still the pipe, not a file renamed over it
    assert run("compress", work / "photo.png", "-q", "1", "-o", os.devnull).exit_code == 0


def test_a_terminal_named_as_output_is_refused(work):
    import os

    if not hasattr(os, "openpty"):
        pytest.skip("needs a pseudo-terminal")
    master, slave = os.openpty()
    try:
        r = run("compress", work / "photo.png", "-q", "1", "-o", os.ttyname(slave))
        assert r.exit_code == 2 and "to a terminal" in r.stderr, r.output
    finally:
        os.close(master)
        os.close(slave)


def test_decompress_does_not_write_aec(work):
    assert run("compress", work / "photo.png", "-q", "2").exit_code == 0
    r = run("decompress", work / "photo.aec", "-o", work / "again.aec")
    assert r.exit_code == 2 and "use compress" in r.stderr and not (work / "again.aec").exists(), r.output


def test_messages_close_the_tile_bar_first():
    from aecodec import cli

    b = cli._Batch(1, True, "compress")
    b._on_tile("synthesis", 3, 4)
    assert b._tiles is not None and b._tiles.n == 3
    b._on_tile("synthesis", 1, 4)  # the same stage again (another level tried): a new bar
    assert b._tiles.n == 1
    b.say("a summary line")
    assert b._tiles is None


def test_misnamed_output_targets(work):
    assert run("compress", work / "photo.png", "-q", "1").exit_code == 0
    r = run("compress", work / "photo.png", "-d", work / "photo.png")
    assert r.exit_code == 2 and "needs a directory" in r.stderr, r.output
    (work / "dir").mkdir()
    r = run("decompress", work / "photo.aec", "-o", work / "dir")
    assert r.exit_code == 2 and "is a directory" in r.stderr, r.output


def test_binary_data_is_not_read_from_or_written_to_a_terminal(monkeypatch):
    import sys

    from aecodec import cli

    class Tty:
        def isatty(self):
            return True

    class Pipe:
        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr(sys, "stdout", Pipe())
    with pytest.raises(cli.UsageProblem, match="from a terminal"):
        cli._refuse_terminal("-", "x.aec", "an image")
    cli._refuse_terminal("photo.png", "-", "an image")  # stdout is a pipe: fine
    monkeypatch.setattr(sys, "stdout", Tty())
    with pytest.raises(cli.UsageProblem, match="to a terminal"):
        cli._refuse_terminal("photo.png", "-", "an image")
    cli._refuse_terminal("photo.png", "photo.aec", "an image")


def test_a_failed_write_to_stdout_is_one_line(tmp_path, photo_crops):
    import os
    import subprocess
    import sys

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    src = tmp_path / "p.png"
    Image.fromarray(photo_crops[0][:64, :64]).save(src)
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-c", "from aecodec.cli import main; main()", "compress", str(src),
                            "-q", "1", "-o", "-"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == "aecodec: error: <stdout>: cannot write (No space left on device)", r.stderr


def test_jpeg_output_of_an_alpha_file_is_refused_before_decoding(work, monkeypatch):
    import aecodec

    Image.fromarray(np.dstack([np.asarray(Image.open(work / "photo.png")),
                               np.full((96, 128), 200, np.uint8)])).save(work / "a.png")
    assert run("compress", work / "a.png", "-q", "1").exit_code == 0

    def no_decode(*a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(aecodec, "decompress", no_decode)
    r = run("decompress", work / "a.aec", "-o", work / "a.jpg")
    assert r.exit_code == 2 and "alpha" in r.stderr and not (work / "a.jpg").exists(), r.output
    # BMP: Pillow writes a 32-bit BMP that it and most viewers read back without alpha
    r = run("decompress", work / "a.aec", "-o", work / "a.bmp")
    assert r.exit_code == 2 and "BMP cannot hold the alpha channel" in r.stderr, r.output
    assert not (work / "a.bmp").exists()


def test_alpha_and_icc_outputs_keep_them_or_say_so(work):
    from PIL import ImageCms

    rgb = np.asarray(Image.open(work / "photo.png"))
    alpha = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (96, 1))  # partial transparency
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(np.dstack([rgb, alpha])).save(work / "a.png", icc_profile=icc)
    assert run("compress", work / "a.png", "-q", "1").exit_code == 0
    for ext in (".png", ".webp", ".tiff"):  # these hold both
        r = run("decompress", work / "a.aec", "-o", work / f"a2{ext}")
        assert r.exit_code == 0 and "warning" not in r.stderr, r.output
        im = Image.open(work / f"a2{ext}")
        assert im.mode == "RGBA" and im.info.get("icc_profile") == icc
    r = run("decompress", work / "a.aec", "-o", work / "a.gif")
    assert r.exit_code == 0 and "alpha channel may be lost" in r.stderr, r.output
    r = run("decompress", work / "a.aec", "-o", work / "a.jp2")  # holds alpha, not the profile
    assert r.exit_code == 0 and "cannot hold the image's ICC profile" in r.stderr, r.output
    Image.fromarray(np.dstack([rgb[:, :, 0], alpha])).save(work / "la.png")
    assert run("compress", work / "la.png", "-q", "1").exit_code == 0
    r = run("decompress", work / "la.aec", "-o", work / "la.ppm")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "alpha" in r.stderr, r.output
    r = run("decompress", work / "a.aec", "-o", work / "a.tga")  # TGA keeps alpha (decided by a round trip)
    assert r.exit_code == 0 and Image.open(work / "a.tga").mode == "RGBA", r.output
    r = run("decompress", work / "a.aec", "-o", work / "a.ico")  # 128x96 fits in an icon, at its own size
    assert r.exit_code == 0 and Image.open(work / "a.ico").size == (128, 96), r.output


def test_lossy_outputs_say_so_and_take_a_quality(work):
    assert run("compress", work / "photo.png", "-q", "8").exit_code == 0
    assert run("decompress", work / "photo.aec", "-o", work / "exact.png").exit_code == 0
    r = run("decompress", work / "photo.aec", "-o", work / "hi.jpg")
    assert r.exit_code == 0 and "JPEG quality 95 (lossy)" in r.stderr, r.output
    r = run("decompress", work / "photo.aec", "-o", work / "lo.jpg", "--image-quality", "30")
    assert r.exit_code == 0 and "JPEG quality 30 (lossy)" in r.stderr, r.output
    exact = Image.open(work / "exact.png")
    hi, lo = Image.open(work / "hi.jpg"), Image.open(work / "lo.jpg")
    assert (work / "lo.jpg").stat().st_size < (work / "hi.jpg").stat().st_size
    assert psnr(exact, hi) > psnr(exact, lo) and psnr(exact, hi) > 40
    r = run("decompress", work / "photo.aec", "-o", work / "x.png")  # lossless: no quality named
    assert "(lossy)" not in r.stderr and "warning" not in r.stderr
    r = run("decompress", work / "photo.aec", "-o", work / "y.png", "--image-quality", "30")  # said, not ignored
    assert r.exit_code == 0 and "warning" in r.stderr and "quality 30 does not apply" in r.stderr, r.stderr
    assert np.array_equal(np.asarray(Image.open(work / "y.png")), np.asarray(exact))
    r = run("decompress", work / "photo.aec", "-o", work / "bad.jpg", "--image-quality", "0")
    assert r.exit_code == 2 and not (work / "bad.jpg").exists()
    r = run("decompress", work / "photo.aec", "-o", work / "p.pdf")  # a PDF holds a JPEG
    assert r.exit_code == 0 and "PDF quality 95 (lossy)" in r.stderr, r.output


def test_heatmap_without_matplotlib_is_one_line(work, monkeypatch):
    import sys

    assert run("compress", work / "photo.png", "-q", "1").exit_code == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    r = run("info", work / "photo.aec", "--heatmap", work / "h.png")
    assert r.exit_code == 1 and "needs matplotlib" in r.stderr and len(r.stderr.splitlines()) == 1, r.output
    assert not (work / "h.png").exists()


def test_one_large_file_reports_progress_over_tiles(tmp_path, monkeypatch):
    from aecodec import cli

    calls = []
    monkeypatch.setattr(cli._Batch, "_on_tile", lambda self, *a: calls.append(a))
    b = cli._Batch(1, True, "compress")
    assert b.tile_bars and b.bar.disable  # one file: no bar over files, a bar over tiles

    def job():
        from aecodec import tiling

        tiling.run(lambda v: v, lambda *c: np.zeros((1, 1, 4, 4)), lambda *c: None, (4, 4), 1, 1, 0, tile=2,
                   what="analysis")

    b.run("x", job)
    assert calls == [("analysis", 1, 4), ("analysis", 2, 4), ("analysis", 3, 4), ("analysis", 4, 4)]
    assert not cli._Batch(1, False, "compress").tile_bars
    assert not cli._Batch(3, True, "compress").tile_bars


def test_max_size_picks_the_quality(work):
    import aecodec

    img = np.asarray(Image.open(work / "photo.png"))
    sizes = {q: len(aecodec.compress(img, quality=q)) for q in (2, 3, 4, 5, 8)}
    r = run("compress", work / "photo.png", "--max-size", str(sizes[3] + 1), "-o", work / "a.aec")
    q = aecodec.info((work / "a.aec").read_bytes())["quality"]
    assert r.exit_code == 0 and 3 <= q < 4 and f", q{q} (the best within {_human(sizes[3] + 1)}), " in r.stderr, r.output
    assert (work / "a.aec").read_bytes() == aecodec.compress(img, quality=q)
    assert (work / "a.aec").stat().st_size <= sizes[3] + 1
    budget = (sizes[4] + sizes[5]) // 2  # between two levels: the hundredths that fit
    r = run("compress", work / "photo.png", "--max-size", str(budget), "-o", work / "f.aec")
    q = aecodec.info((work / "f.aec").read_bytes())["quality"]
    assert r.exit_code == 0 and 4 < q < 5 and (work / "f.aec").stat().st_size <= budget, (q, r.output)
    assert len(aecodec.compress(img, quality=round(q + 0.01, 2))) > budget
    r = run("compress", work / "photo.png", "--max-size", "10M", "-o", work / "b.aec")  # alone: up to 8
    assert r.exit_code == 0 and aecodec.info((work / "b.aec").read_bytes())["quality"] == 8
    r = run("compress", work / "photo.png", "--max-size", "10M", "-q", "2", "-o", work / "c.aec")  # -q caps
    assert r.exit_code == 0 and aecodec.info((work / "c.aec").read_bytes())["quality"] == 2
    assert ", q2 (the highest asked for, within 10.0 MB), " in r.stderr, r.stderr
    r = run("compress", work / "photo.png", "--max-size", "100", "-o", work / "d.aec")
    assert r.exit_code == 1 and "cannot fit in 100 B" in r.stderr and not (work / "d.aec").exists(), r.output
    r = run("compress", work / "photo.png", "--max-size", "lots", "-o", work / "e.aec")
    assert r.exit_code == 2 and "a size is" in r.stderr and not (work / "e.aec").exists()


def test_sizes_with_units():
    from aecodec.cli import _Size

    conv = _Size().convert
    assert [conv(v, None, None) for v in ("50000", "80k", "80kB", "1.5M", "100KiB", "2MiB", " 3 k ", "1.001k",
                                          "1.003M")] == [50000, 80000, 80000, 1500000, 102400, 2 * 2**20, 3000, 1001,
                                                         1003000]
    for bad in ("", "k", "-5", "0", "0.0001k", "5 kilobytes", "1e6", "2.5", "1.0001k"):
        with pytest.raises(click.exceptions.BadParameter):
            conv(bad, None, None)


def test_a_reader_gone_before_the_final_flush_is_no_traceback():
    """The reader of stdout went away (a closed pipe) by the time aecodec flushes at its end:
    exit 1 and nothing on stderr, as click does for a closed pipe during a write."""
    import subprocess
    import sys

    code = """
import sys
from aecodec.cli import main
class Gone:
    def __init__(self, s): self.s = s
    def write(self, t): return len(t)
    def flush(self): raise BrokenPipeError(32, "Broken pipe")
    def __getattr__(self, n): return getattr(self.s, n)
sys.stdout = Gone(sys.stdout)
main(["--version"])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr == "", r.stderr


@pytest.mark.parametrize("args", [["--version"], ["compress", "{png}", "-q", "1", "-o", "{aec}", "-f"],
                                  ["-m", "aecodec.train", "--help"]])
def test_a_closed_stdout_is_not_an_error(work, args):
    """Started with stdout closed (`>&-`; Python then has sys.stdout = None): the command does
    its work and exits 0, as before the flushes that report a stdout that cannot be written."""
    import shlex
    import subprocess
    import sys

    args = [a.format(png=work / "photo.png", aec=work / "c.aec") for a in args]
    cmd = [sys.executable] + (args if args[0] == "-m" else ["-c", "from aecodec.cli import main; main()"] + args)
    r = subprocess.run(["sh", "-c", " ".join(shlex.quote(c) for c in cmd) + " >&-"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    if "compress" in args:
        assert (work / "c.aec").exists()


# -- what keeps a user's files safe (each of these survived a mutation of the code before) -----------

def test_an_output_that_is_the_input_is_refused_even_with_f(work):
    """However the name is spelled (./, a symlink): the input is never replaced by its own output."""
    png = (work / "photo.png").read_bytes()
    (work / "pic.aec").write_bytes(png)  # a PNG under an .aec name: compress reads it, and -o names it
    (work / "ln.aec").symlink_to(work / "pic.aec")
    for out in (work / "pic.aec", f"{work}/./pic.aec", work / "ln.aec"):
        r = run("compress", work / "pic.aec", "-o", out, "-f")
        assert r.exit_code == 2 and "overwrite the input" in r.stderr, r.output
        assert (work / "pic.aec").read_bytes() == png
    assert run("compress", work / "photo.png", "-q", "1").exit_code == 0
    aec = (work / "photo.aec").read_bytes()
    (work / "img.png").write_bytes(aec)  # .aec data under a .png name: decompress reads it, -o names it
    (work / "ln.png").symlink_to(work / "img.png")
    for out in (work / "img.png", f"{work}/./img.png", work / "ln.png"):
        r = run("decompress", work / "img.png", "-o", out, "-f")
        assert r.exit_code == 2 and "overwrite the input" in r.stderr, r.output
        assert (work / "img.png").read_bytes() == aec


def test_without_f_a_file_that_appears_meanwhile_is_not_overwritten(work, monkeypatch):
    """The early 'exists' check can be raced; the final hard link is what guarantees it."""
    import aecodec.cli as cli

    monkeypatch.setattr(cli, "_check_output", lambda out, force: None)  # as if the file appeared after it
    (work / "photo.aec").write_bytes(b"the user's")
    r = run("compress", work / "photo.png")
    assert r.exit_code == 2 and "exists" in r.stderr
    assert (work / "photo.aec").read_bytes() == b"the user's"
    assert not list(work.glob(".*.part"))


def test_f_replaces_the_name_not_the_file_it_named(work):
    """-f renames a new file over the name: another hard link to the old file keeps the old bytes."""
    import os

    (work / "keep.aec").write_bytes(b"old bytes")
    os.link(work / "keep.aec", work / "out.aec")
    assert run("compress", work / "photo.png", "-o", work / "out.aec", "-f", "-q", "1").exit_code == 0
    assert (work / "keep.aec").read_bytes() == b"old bytes"
    import aecodec

    assert aecodec.info((work / "out.aec").read_bytes())["quality"] == 1


def test_outputs_get_the_permissions_of_the_umask(work):
    import os
    import stat

    old = os.umask(0o027)
    try:
        assert run("compress", work / "photo.png", "-q", "1").exit_code == 0
        assert run("decompress", work / "photo.aec", "-o", work / "back.png").exit_code == 0
        assert run("compress", work / "photo.png", "-q", "2", "-f").exit_code == 0
    finally:
        os.umask(old)
    for name in ("photo.aec", "back.png"):  # not the 0600 of a temporary file
        assert stat.S_IMODE(os.stat(work / name).st_mode) == 0o640, name


def test_a_batch_exits_with_its_worst_failure(many):
    """A usage error (2) before a data error (1): the batch says 2, and lists both."""
    assert run("compress", many / "a.png", "-q", "1").exit_code == 0
    r = run("compress", many / "a.png", many / "bad.png")  # a.aec exists (2), bad.png is not an image (1)
    assert r.exit_code == 2 and r.stderr.count("aecodec: error:") == 2, r.output


def test_warnings_from_outside_aecodec_are_shown_not_swallowed(work, monkeypatch):
    import warnings

    import aecodec

    assert run("compress", work / "photo.png", "-q", "1").exit_code == 0
    real = aecodec.decompress

    def noisy(*a, **k):
        warnings.warn("a library's note", UserWarning)
        return real(*a, **k)

    monkeypatch.setattr(aecodec, "decompress", noisy)
    r = run("decompress", work / "photo.aec", "-o", work / "back.png")
    assert r.exit_code == 0 and "UserWarning: a library's note" in r.stderr, r.output


def test_a_decoder_that_cannot_run_here_is_one_line_not_an_internal_error(work, monkeypatch):
    import sys

    from aecodec import rans

    run("compress", work / "photo.png", "-q", "2")
    monkeypatch.setattr(rans, "_worker_works", [])
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(sys, "_base_executable", "/nonexistent/python3", raising=False)
    r = run("decompress", work / "photo.aec", "-o", work / "out.png")
    assert r.exit_code == 1 and "internal error" not in r.stderr and not (work / "out.png").exists()
    assert r.stderr.startswith("aecodec: error: ") and "not a Python it can start" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1
