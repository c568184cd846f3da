"""The aecodec command line: a thin layer over the aecodec library.

Heavy imports (torch, compressai) happen inside the commands, so that
``aecodec --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Optional

import click

from aecodec.api import DEFAULT_QUALITY, MAX_PIXELS, QUALITIES
from aecodec.export import WEIGHTS as EXPORT_WEIGHTS  # light: torch loads when an export runs
from aecodec.format import MAGIC as AEC_MAGIC

EXIT_DATA = 1  # unreadable image, corrupt file, I/O failure
EXIT_USAGE = 2  # bad options, refusing to overwrite


class DataError(click.ClickException):
    exit_code = EXIT_DATA

    def show(self, file=None):
        click.echo(f"aecodec: error: {self.format_message()}", err=True)


class UsageProblem(click.ClickException):
    exit_code = EXIT_USAGE

    def show(self, file=None):
        click.echo(f"aecodec: error: {self.format_message()}", err=True)


class OneLineUsageError(click.UsageError):
    """A usage error in one line, as ``aecodec train`` (argparse) reports them:
    ``aecodec compress: error: No such option '--bogus'. (see aecodec compress --help)``,
    instead of click's usage line, hint line, blank line and message."""

    def __init__(self, message: str, prog: str, ctx=None):
        super().__init__(message, ctx=ctx)
        self.prog = prog

    def show(self, file=None):
        click.echo(f"{self.prog}: error: {self.format_message()} (see {self.prog} --help)", err=True)


def _one_line(e: click.UsageError, prog: str) -> click.UsageError:
    """``prog`` names the command when click's error carries no context (an option missing its
    value, e.g. ``aecodec decompress x.aec -o``)."""
    if isinstance(e, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):  # click >= 8.2
        return e  # a bare ``aecodec`` prints the help, as before
    new = OneLineUsageError(e.format_message(), e.ctx.command_path if e.ctx is not None else prog, ctx=e.ctx)
    new.exit_code = e.exit_code
    return new


class OneLineErrorsGroup(click.Group):
    """Turns every usage error of the group and its commands (parsing, bad values, unknown
    commands, ``ctx.fail``) into a one-line report; the exit status stays 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise _one_line(e, info_name or "aecodec") from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # the command being parsed, once it is known
            sub = ctx.invoked_subcommand
            raise _one_line(e, f"{ctx.command_path} {sub}" if sub else ctx.command_path) from None

    def main(self, *args, **kwargs):
        """Stdout that cannot be written (``aecodec info x.aec > /dev/full``, ``--help`` too):
        one line and exit 1, not a traceback or a silent 0.  (click handles a closed pipe.)"""
        from aecodec._argparse import flush_stdout, stdout_failed, writes_stdout

        try:
            return super().main(*args, **kwargs)
        except SystemExit as e:  # how click ends every run: flush while it can still be reported
            try:
                failed = flush_stdout()
            except BrokenPipeError:  # the reader went away: silent, exit 1, as click does itself
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(e.code or 1)
            if failed is not None and not e.code:
                sys.exit(failed)
            raise
        except OSError as e:
            if not writes_stdout(e):
                raise
            sys.exit(stdout_failed(e))


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    from aecodec import FORMAT_VERSION, __version__

    return (f"aecodec {__version__} (file format {FORMAT_VERSION}); "
            f"torch {v('torch')}, compressai {v('compressai')}, pillow {v('pillow')}")


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_versions())
        ctx.exit(0)


def _is_special(path: str) -> bool:
    """An existing output that is not a regular file (/dev/null, a named pipe): written
    straight into, not replaced by a rename (which would replace the device node)."""
    import stat

    try:
        m = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(m) or stat.S_ISFIFO(m) or stat.S_ISSOCK(m)  # not a block device: -f applies there


def _refuse_terminal(inp: str, out: str, what: str) -> None:
    """Like gzip: binary data is neither read from nor written to a terminal."""
    if inp == "-" and sys.stdin.isatty():
        raise UsageProblem(f"refusing to read {what} from a terminal; give a file name or pipe one in")
    if out == "-" and sys.stdout.isatty():
        raise UsageProblem("refusing to write binary data to a terminal; redirect it or use -o FILE")


def _read_input(src: str) -> bytes:
    if src == "-":
        return sys.stdin.buffer.read()
    p = Path(src)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{src}: is a directory") from None
    except PermissionError:
        raise DataError(f"{src}: permission denied") from None
    except OSError as e:
        raise DataError(f"{src}: cannot read ({e.strerror})") from None


# -d DIR that does not exist yet: made when its first output is written (not before: a run whose
# inputs all fail leaves nothing behind). Set by _run_batch for its run only.
_MAKE_DIRS: set = set()


def _check_output(out: str, force: bool, other_name: str = " or -o to choose another name") -> None:
    if out == "-" or _is_special(out):
        return
    p = Path(out)
    if p.is_dir():
        raise UsageProblem(f"{out}: is a directory")
    if not p.parent.is_dir() and str(p.parent) not in _MAKE_DIRS:
        raise DataError(f"{out}: output directory {str(p.parent)!r} does not exist")
    if p.exists() and not force:
        raise UsageProblem(f"{out} exists; use -f to overwrite{other_name}")


def _write_output(out: str, data: bytes, force: bool) -> None:
    """Write atomically: a temporary file in the target directory, then rename.

    Without ``force`` the final step is a hard link, which fails if the name
    appeared meanwhile, so nothing is ever overwritten by accident.  On any
    error, Ctrl-C or SIGTERM the temporary file is removed: no partial output.
    """
    if str(Path(out).parent) in _MAKE_DIRS and not Path(out).parent.is_dir():
        try:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            _MAKE_DIRS.discard(str(Path(out).parent))  # the next inputs are refused before their work
            raise DataError(f"{Path(out).parent}: cannot create the output directory ({e.strerror or e})") from None
    if out == "-" or _is_special(out):
        try:
            if out == "-":
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                with open(out, "wb") as f:
                    if f.isatty():  # -o /dev/tty
                        raise UsageProblem(f"{out}: refusing to write binary data to a terminal")
                    f.write(data)
        except OSError as e:
            if out == "-":  # nothing more can reach stdout: keep Python's exit from complaining too
                try:
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                except OSError:
                    pass
            raise DataError(f"{'<stdout>' if out == '-' else out}: cannot write ({e.strerror or e})") from None
        return
    import tempfile

    p = Path(out)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    except FileNotFoundError:
        if p.parent.is_dir():
            raise DataError(f"{out}: cannot create a file in {str(p.parent)!r}") from None
        raise DataError(f"{out}: output directory {str(p.parent)!r} does not exist") from None
    except OSError as e:
        raise DataError(f"{out}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        if force:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise UsageProblem(f"{out} exists; use -f to overwrite") from None
            except OSError:  # filesystems without hard links
                if p.exists():
                    raise UsageProblem(f"{out} exists; use -f to overwrite") from None
                os.replace(tmp, p)
    except OSError as e:
        raise DataError(f"{out}: cannot write ({e.strerror})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that clean-up (temporary files, workers) runs."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _install_signal_handlers() -> None:
    import signal

    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM
        pass


class _Batch:
    """Runs one job per input: a progress bar, one line per failure, the worst exit code."""

    def __init__(self, n: int, progress: Optional[bool], what: str):
        from tqdm import tqdm

        # one file: a bar over the transforms' tiles instead (images over ~1 Mpx have several)
        self.tile_bars = n == 1 and (progress is True or (progress is None and sys.stderr.isatty()))
        self._tiles = None
        if progress is None:
            progress = n > 1 and sys.stderr.isatty()
        self.bar = tqdm(total=n, unit="file", desc=what, file=sys.stderr, disable=not progress or n == 1,
                        dynamic_ncols=True, leave=False)
        self.n = n
        self.failed = []
        self.code = 0

    def say(self, msg: str) -> None:
        self._close_tiles()  # a line printed under an open bar would be garbled
        if self.bar.disable:
            click.echo(msg, err=True)
        else:
            self.bar.write(msg, file=sys.stderr)

    def _on_tile(self, what: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._tiles is None or self._tiles.desc != what or done < self._tiles.n:
            self._close_tiles()
            self._tiles = tqdm(total=total, unit="tile", desc=what, file=sys.stderr, dynamic_ncols=True,
                               leave=False)
        self._tiles.update(done - self._tiles.n)

    def _close_tiles(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None

    def run(self, name: str, job) -> None:
        from aecodec import tiling

        try:
            if self.tile_bars:
                with tiling.report_tiles(self._on_tile):
                    try:
                        job()
                    finally:
                        self._close_tiles()
            else:
                job()
        except click.ClickException as e:
            self.say(f"aecodec: error: {e.format_message()}")
            self.failed.append(name)
            self.code = max(self.code, e.exit_code)
        except MemoryError:
            self.say(f"aecodec: error: {name}: not enough memory")
            self.failed.append(name)
            self.code = max(self.code, EXIT_DATA)
        except Exception as e:  # a bug: still one line, and the other files go on
            if os.environ.get("AECODEC_DEBUG"):
                raise
            msg = " ".join(str(e).split())[:300]
            self.say(f"aecodec: error: {name}: internal error ({type(e).__name__}: {msg}); "
                     "please report it (AECODEC_DEBUG=1 shows the traceback)")
            self.failed.append(name)
            self.code = max(self.code, EXIT_DATA)
        finally:
            self.bar.update(1)

    def finish(self) -> None:
        self.bar.close()
        if self.n > 1 and self.failed:
            shown = ", ".join(self.failed[:5]) + (", ..." if len(self.failed) > 5 else "")
            click.echo(f"aecodec: {len(self.failed)} of {self.n} files failed: {shown}", err=True)
        if self.code:
            sys.exit(self.code)


def _run_batch(what: str, inputs, output, out_dir, suffix: str, progress: Optional[bool], one) -> None:
    """``one(inp, out, say)`` for every input, each output claimed once, failures reported and counted."""
    outs, make_dir = _outputs(list(inputs), output, out_dir, suffix)
    _MAKE_DIRS.clear()
    if make_dir:
        _MAKE_DIRS.add(make_dir)
    try:
        _run_jobs(inputs, outs, progress, what, one)
    finally:
        _MAKE_DIRS.clear()


def _run_jobs(inputs, outs, progress, what: str, one) -> None:
    batch = _Batch(len(inputs), progress, what)
    claimed = {}
    for inp, out in zip(inputs, outs):
        def job(inp=inp, out=out):
            if out is None:
                if not inp:
                    raise DataError("'': an empty file name")
                _read_input(inp)  # a directory: says so
                raise DataError(f"{inp}: not a file")
            if what == "compress" and inp != "-" and Path(inp).is_file() and _starts_with(Path(inp), AEC_MAGIC):
                # before _claim: `compress photo.aec` would name photo.aec as its own output
                raise UsageProblem(f"{inp} is already an .aec file; decompress it, not compress it")
            _claim(out, inp, claimed)
            one(inp, out, batch.say)
        batch.run(inp, job)
    batch.finish()


def _interruptible(fn):
    """Ctrl-C / SIGTERM: one line, exit 130 / 143, nothing half-written left behind."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _install_signal_handlers()
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("\naecodec: interrupted", err=True)
            sys.exit(130)
        except _Terminated:
            click.echo("aecodec: terminated", err=True)
            sys.exit(143)

    return wrapper


def _outputs(inputs, output: Optional[str], out_dir: Optional[str], suffix: str):
    if "-" in inputs and len(inputs) > 1:
        raise UsageProblem("'-' (stdin) cannot be combined with other inputs")
    if output is not None and len(inputs) > 1:
        raise UsageProblem("-o names a single output; with several inputs use -d DIR (or nothing)")
    if output is not None and out_dir is not None:
        raise UsageProblem("use -o or -d, not both")
    make_dir = None
    if out_dir is not None and not Path(out_dir).is_dir():
        if Path(out_dir).is_symlink() and not Path(out_dir).exists():
            raise UsageProblem(f"{out_dir}: -d names a broken symbolic link")
        if Path(out_dir).exists():
            raise UsageProblem(f"{out_dir}: -d needs a directory, and this is a file")
        why = _cannot_make(Path(out_dir))
        if why:  # said once, before any work
            raise DataError(f"{out_dir}: cannot create the output directory ({why})")
        make_dir = str(Path(out_dir))  # made (with its parents, as `mkdir -p`) when the first output is written
    outs = []
    for inp in inputs:
        if output is not None:
            outs.append(output)
        elif inp == "-":
            outs.append("-")
        elif Path(inp).name in ("", "..") or Path(inp).is_dir():
            outs.append(None)  # no output name to derive: the input is refused on its turn
        elif out_dir is not None:
            outs.append(str(Path(out_dir) / (Path(inp).stem + suffix)))
        else:
            outs.append(str(Path(inp).with_suffix(suffix)))
    return outs, make_dir


def _cannot_make(d: Path) -> Optional[str]:
    """Why the directory ``d`` (absent) could not be made, from its nearest existing ancestor, or None."""
    anc = d
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return f"{anc} is not a directory"
    if not os.access(anc, os.W_OK | os.X_OK):
        return f"permission denied in {anc}"
    return None


def _claim(out: str, inp: str, claimed: dict) -> None:
    """Refuse an output that is an input, or that an earlier input of this run already writes."""
    if out == "-":
        return
    key = os.path.abspath(out)
    if inp != "-" and Path(out).resolve() == Path(inp).resolve():
        raise UsageProblem(f"{inp}: output would overwrite the input")
    if key in claimed:
        raise UsageProblem(f"{inp}: output {out} is also the output of {claimed[key]}")
    claimed[key] = inp


MAX_PIXELS_HELP = (f"refuse images over N pixels (decompression-bomb guard; 0: no limit)  "
                   f"[default: {MAX_PIXELS} = 2^{MAX_PIXELS.bit_length() - 1}]")


def _max_pixels_option(f):
    return click.option("--max-pixels", type=click.IntRange(min=0), default=MAX_PIXELS, show_default=False,
                        metavar="N", help=MAX_PIXELS_HELP)(f)


class _Quality(click.ParamType):
    """A quality: a level 1..8, or between two levels in steps of 0.01 (6.5), with an error
    that says what is allowed."""

    name = "Q"

    def convert(self, value, param, ctx):
        import re

        from aecodec.api import check_quality

        text = str(value).strip()
        if re.fullmatch(r"\d+(\.\d{1,2})?|\.\d{1,2}", text):
            try:
                return check_quality(float(text))
            except ValueError:
                pass
        comma = " with a decimal point" if re.fullmatch(r"\d+,\d{1,2}", text) else ""
        self.fail(f"{value!r}: the quality is a number from {QUALITIES[0]} to {QUALITIES[-1]}, "
                  f"at most two decimals{comma} (6, 6.5, 6.25)", param, ctx)


class _Size(click.ParamType):
    """A file size: bytes, or with a unit (k/M: 1000s, KiB/MiB: 1024s; the B is optional)."""

    name = "SIZE"
    UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        import re
        from decimal import Decimal

        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG]i?)?[bB]?\s*", str(value))
        n = None
        if m:
            exact = Decimal(m.group(1)) * self.UNITS[(m.group(2) or "").lower()]
            n = int(exact) if exact == exact.to_integral_value() else None  # whole bytes only
        if not n or n < 1:
            self.fail(f"{value!r}: a size is a positive number of bytes, optionally with a unit "
                      "(80k, 1.5M, 100KiB)", param, ctx)
        return n


QUALITY_HELP = (f"quality {QUALITIES[0]} (smallest file) .. {QUALITIES[-1]} (best image); a level, or in steps of 0.01 "
                "between two levels (6.5)")
PROGRESS_HELP = ("progress bar on stderr: over the files, or for one large file over its tiles "
                 "(default: when stderr is a terminal)")


@click.group(cls=OneLineErrorsGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show aecodec, file-format, torch and compressai versions.")
def main():
    """aecodec: a learned image codec.

    \b
      aecodec compress photo.png        # -> photo.aec
      aecodec decompress photo.aec      # -> photo.png
      aecodec compress *.jpg -d out/    # many files, one progress bar
      aecodec info photo.aec            # what is in the file

    Exit codes: 0 ok, 1 bad data (unreadable image, corrupt file, a --max-size
    that no quality meets), 2 bad usage
    (or an output that exists without -f); with several files, the worst of
    them (the others are still processed).  130 after Ctrl-C.
    """


def _compress_one(inp: str, out: str, quality: int, force: bool, quiet: bool, max_pixels, say,
                  max_bytes: Optional[int] = None) -> None:
    import io

    import aecodec
    from aecodec.api import compress_planes
    from aecodec.image import ImageError, open_image

    if out != "-" and not _is_special(out) and Path(out).suffix.lower() != ".aec":
        raise UsageProblem(f"{out}: compressed files are written as .aec (got {Path(out).suffix or 'no extension'!r})")
    _refuse_terminal(inp, out, "an image")
    _check_output(out, force)
    t0 = time.time()
    try:
        if inp == "-":
            raw = _read_input(inp)
            if not raw:
                raise DataError(f"{inp}: empty input")
            if raw[:4] == AEC_MAGIC:
                raise UsageProblem("<stdin> is already an .aec file; decompress it, not compress it")
            planes = open_image(io.BytesIO(raw), name="<stdin>", max_pixels=max_pixels)
        else:
            p = Path(inp)
            if p.is_file() and p.stat().st_size == 0:
                raise DataError(f"{inp}: empty file")
            planes = open_image(p, name=inp, max_pixels=max_pixels)  # (an .aec input: refused by _run_batch)
    except ImageError as e:
        raise DataError(str(e)) from None
    for note in planes.notes:
        say(f"aecodec: warning: {inp}: {note}")
    models_before = _loaded_models()
    try:
        data = compress_planes(planes, quality, max_pixels=max_pixels, max_bytes=max_bytes)
    except aecodec.SizeError as e:
        raise DataError(f"{inp}: cannot fit in {_human(max_bytes)}: {e}") from None
    except (aecodec.AecodecError, ValueError) as e:  # WeightsError, ImageError, FormatError ...
        raise DataError(f"{inp}: {e}") from None
    _write_output(out, data, force)
    if not quiet:
        loading = " (with loading the model)" if _loaded_models() > models_before else ""
        bpp = 8 * len(data) / (planes.width * planes.height)
        q = aecodec.info(data)["quality"]
        if max_bytes is not None:  # what set the quality: the budget, or the cap under it
            q = f"{q} ({'the highest asked for, within' if q == quality else 'the best within'} {_human(max_bytes)})"
        say(f"{inp} -> {out}: {planes.width}x{planes.height} {planes.mode}, q{q}, "
            f"{_human(len(data))}, {bpp:.3f} bpp, {time.time() - t0:.2f} s{loading}")


@main.command()
@click.argument("inputs", metavar="IN...", nargs=-1, required=True)
@click.option("-o", "--output", metavar="OUT", help="output file, for a single IN (default: IN with .aec; '-' for stdout)")
@click.option("-d", "--out-dir", metavar="DIR", help="write the outputs into DIR, made if missing (default: next to each IN)")
@click.option("-q", "--quality", type=_Quality(), default=DEFAULT_QUALITY, show_default=True, help=QUALITY_HELP)
@click.option("--max-size", "max_size", type=_Size(), metavar="SIZE",
              help="instead of -q: the best quality (to 0.01) whose file is at most SIZE (e.g. 50000, 80k, "
                   "1.5M, 100KiB); with -q, the best up to that quality")
@click.option("-f", "--force", is_flag=True, help="overwrite outputs that exist")
@_max_pixels_option
@click.option("--progress/--no-progress", default=None, help=PROGRESS_HELP)
@click.option("--quiet", is_flag=True, help="no summary line per file on stderr")
@click.pass_context
@_interruptible
def compress(ctx, inputs, output: Optional[str], out_dir: Optional[str], quality: int, max_size: Optional[int],
             force: bool, max_pixels: int, progress: Optional[bool], quiet: bool):
    """Compress images (PNG, JPEG, WebP, TIFF, BMP, GIF, ...) to .aec files.

    IN may be '-' to read one image from stdin (output then defaults to
    stdout).  With several INs, a failure is reported and the others go on.
    """
    if max_size is not None and ctx.get_parameter_source("quality") == click.core.ParameterSource.DEFAULT:
        quality = QUALITIES[-1]  # --max-size alone: the best level that fits
    _run_batch("compress", inputs, output, out_dir, ".aec", progress,
               lambda inp, out, say: _compress_one(inp, out, quality, force, quiet, max_pixels, say, max_size))


def _loaded_models() -> int:
    from aecodec.weights import loaded_models

    return loaded_models()


def _starts_with(p: Path, magic: bytes) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False  # open_image reports why it cannot be read


def _image_format_for(path: str) -> str:
    from PIL import Image

    if path == "-" or (_is_special(path) and not Path(path).suffix):
        return "PNG"
    if Path(path).is_dir():
        raise UsageProblem(f"{path}: is a directory")
    from aecodec.image import register_plugins

    Image.init()
    register_plugins()  # .heic, .jxl where their plugins are installed
    ext = Path(path).suffix.lower()
    fmt = Image.EXTENSION.get(ext)
    if fmt == "AEC":
        raise UsageProblem(f"{path}: decompress writes an image (.png, .webp, ...); to re-encode an image "
                           "as .aec, use compress")
    if fmt is None or fmt not in Image.SAVE:
        raise UsageProblem(f"{path}: cannot tell an image format to write from {ext or 'no extension'!r} "
                           f"(use e.g. .png, .bmp, .tiff, .webp)")
    return fmt


def _decompress_one(inp: str, out: str, force: bool, quiet: bool, max_pixels, precision: str,
                    image_quality: Optional[int], say) -> None:
    import io

    import aecodec
    from aecodec.image import ImageError, save_plan

    fmt = _image_format_for(out)
    _refuse_terminal(inp, out, ".aec data")
    _check_output(out, force)
    raw = _read_input(inp)
    t0 = time.time()
    try:
        head = aecodec.info(raw)
        try:  # from the header, before the decode: a format that cannot hold the image is refused
            plan = save_plan(fmt, head["mode"], bool(head.get("icc_profile_bytes")), image_quality,
                             size=(head["width"], head["height"]))
        except ImageError as e:
            raise UsageProblem(f"{out}: {e}") from None
        models_before = _loaded_models()
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", aecodec.AecodecWarning)
            img = aecodec.decompress(raw, max_pixels=max_pixels, precision=precision)
        for w in caught:
            if issubclass(w.category, aecodec.AecodecWarning):
                say(f"aecodec: warning: {inp}: {w.message}")
            else:  # not ours: shown as Python would (through say: not across a progress bar)
                say(warnings.formatwarning(w.message, w.category, w.filename, w.lineno).rstrip())
    except aecodec.AecodecError as e:  # FormatError, WeightsError, DecoderUnavailable
        raise DataError(f"{inp}: {e}") from None
    for w in plan.warnings:
        say(f"aecodec: warning: {out}: {w}")
    params = dict(plan.params)
    if plan.keep_icc and img.info.get("icc_profile"):
        params["icc_profile"] = img.info["icc_profile"]
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt, **params)
    except (OSError, ValueError, KeyError) as e:
        raise UsageProblem(f"{out}: cannot write the {img.mode} image as {fmt} ({e})") from None
    _write_output(out, buf.getvalue(), force)
    if not quiet:
        loading = " (with loading the model)" if _loaded_models() > models_before else ""
        lossy = f", {fmt} quality {plan.lossy} (lossy)" if plan.lossy else ""
        say(f"{inp} -> {out}: {img.width}x{img.height} {img.mode}{lossy}, {time.time() - t0:.2f} s{loading}")


@main.command()
@click.argument("inputs", metavar="IN...", nargs=-1, required=True)
@click.option("-o", "--output", metavar="OUT",
              help="output image for a single IN; format from its extension (default: IN with .png; '-' for PNG on stdout)")
@click.option("-d", "--out-dir", metavar="DIR", help="write the outputs (PNG) into DIR, made if missing (default: next to each IN)")
@click.option("-f", "--force", is_flag=True, help="overwrite outputs that exist")
@_max_pixels_option
@click.option("--image-quality", "image_quality", type=click.IntRange(1, 100), metavar="Q",
              help="quality of a lossy OUT format (.jpg, .webp, .avif, .heic, .jxl): a second loss on top "
                   "of aecodec's  [default: 95]")
@click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="arithmetic of the synthesis transform: float64 makes the pixels independent of the "
                   "machine's convolution kernels, about 3x slower")
@click.option("--progress/--no-progress", default=None, help=PROGRESS_HELP)
@click.option("--quiet", is_flag=True, help="no summary line per file on stderr")
@_interruptible
def decompress(inputs, output: Optional[str], out_dir: Optional[str], force: bool, max_pixels: int,
               image_quality: Optional[int], precision: str, progress: Optional[bool], quiet: bool):
    """Decompress .aec files to images (PNG unless OUT says otherwise).

    With several INs, a failure is reported and the others go on.
    """
    _run_batch("decompress", inputs, output, out_dir, ".png", progress,
               lambda inp, out, say: _decompress_one(inp, out, force, quiet, max_pixels, precision, image_quality, say))


@main.command()
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
@click.option("--heatmap", "heatmap", metavar="OUT.png",
              help="also decode and draw the bits spent per region beside the decoded image")
@click.option("-f", "--force", is_flag=True, help="overwrite the --heatmap file if it exists")
def info(file: str, as_json: bool, heatmap: Optional[str], force: bool):
    """Describe an .aec file: size, quality, model, colour mode (no decoding).

    With --heatmap OUT.png, draw where the bits go: the entropy model's cost of
    every coded latent, spread over the pixels it covers, beside the decoded image.
    """
    if heatmap is not None:
        if Path(heatmap).suffix.lower() != ".png":
            raise UsageProblem(f"{heatmap}: the heatmap is written as .png")
        _check_output(heatmap, force, other_name=" or name another file")
    _refuse_terminal(file, "", ".aec data")
    raw = _read_input(file)
    import aecodec

    try:
        d = aecodec.info(raw)
    except aecodec.FormatError as e:
        raise DataError(f"{file}: {e}") from None
    if heatmap is not None:
        import io

        try:
            import matplotlib  # noqa: F401  (an optional dependency: the bench and train extras have it)
        except ImportError:
            raise DataError("--heatmap needs matplotlib: pip install matplotlib (or aecodec[bench])") from None
        from aecodec.heatmap import draw_heatmap

        buf = io.BytesIO()
        try:
            draw_heatmap(raw, buf)
        except aecodec.AecodecError as e:
            raise DataError(f"{file}: {e}") from None
        _write_output(heatmap, buf.getvalue(), force)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{file}: aecodec file, format version {d['format_version']}\n"
               f"  image     {d['width']}x{d['height']} {d['mode']}\n"
               f"  quality   {d['quality']}"
               + (f" (cannot be decoded: {d['quality_problem']})" if d.get("quality_problem") else "") + "\n"
               f"  model     {d['model']}"
               + (f" (cannot be decoded here: {d['model_problem']})"
                  if d.get("model_problem") else "") + "\n"
               f"  latents   y {d['y_shape'][0]}x{d['y_shape'][1]}, z {d['z_shape'][0]}x{d['z_shape'][1]}\n"
               f"  size      {d['file_bytes']} bytes, {d['bpp']:.4f} bpp "
               f"(y {d['chunks'].get('YSTR', 0)} B, z {d['chunks'].get('ZSTR', 0)} B"
               + (f", alpha {d['chunks']['ALPH']} B" if 'ALPH' in d['chunks'] else "") + ")"
               + (f"\n  colour    ICC profile, {d['icc_profile_bytes']} bytes" if d.get("icc_profile_bytes") else ""))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
              add_help_option=False)
@click.pass_context
def train(ctx):
    """Train (or resume training) the model on a folder of images. See `aecodec train --help`."""
    from aecodec.train import main as train_main

    ctx.exit(train_main(ctx.args, prog="aecodec train"))


@main.command()
@click.argument("checkpoint")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--register/--no-register", default=False, show_default=True,
              help="also add the weights to the manifest.json next to OUT (created if need be) as its default "
                   "model; AECODEC_WEIGHTS_DIR=that folder then makes compress, decompress and bench use them. "
                   "(A release adds them to the shipped weights/ with tools/release.py ship: docs/RELEASE.md)")
@click.option("--weights", "which", type=click.Choice(list(EXPORT_WEIGHTS)), default="auto", show_default=True,
              help="the weights' moving average or the raw weights; auto: what best.pt's validation "
                   "preferred, else the average")
@click.option("-f", "--force", is_flag=True,
              help="overwrite OUT if it exists (never the file that a manifest next to it names for another model: "
                   "the files made with that model would stop decoding)")
def export(checkpoint: str, out: str, register: bool, which: str, force: bool):
    """Bake the CDF tables of a training CHECKPOINT into release weights OUT (.safetensors)."""
    if not out.endswith(".safetensors"):
        raise UsageProblem(f"{out}: release weights are written as .safetensors")
    _check_output(out, force, other_name=" or name another file")
    if not Path(checkpoint).exists():
        raise DataError(f"{checkpoint}: no such file")
    if Path(checkpoint).is_dir():
        raise DataError(f"{checkpoint}: is a directory (aecodec train writes last.pt and best.pt in it)")
    if not _starts_with(Path(checkpoint), b"PK\x03\x04"):  # torch.save writes a zip archive
        raise DataError(f"{checkpoint}: not a training checkpoint (aecodec train writes last.pt and best.pt "
                        "in its run directory)")
    from aecodec.export import export_checkpoint
    from aecodec.weights import WeightsConflict, WeightsError

    try:
        entry = export_checkpoint(checkpoint, Path(out), register_in=Path(out).parent if register else None,
                                  use_ema=EXPORT_WEIGHTS[which])
    except WeightsConflict as e:  # -f does not break the files made with another model
        raise UsageProblem(str(e)) from None
    except WeightsError as e:  # the manifest next to OUT: named in the message, nothing written
        raise DataError(str(e)) from None
    except (OSError, KeyError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        msg = " ".join(str(e).split())[:200]
        raise DataError(f"{checkpoint}: not a usable training checkpoint ({type(e).__name__}: {msg})") from None
    click.echo(json.dumps(entry, indent=2))


from . import bench as _bench_module  # noqa: E402  (imports only click until it runs)

main.add_command(_bench_module.bench)


if __name__ == "__main__":  # pragma: no cover
    main()
