"""The aecodec command line: a thin layer over the aecodec library.

Heavy imports (torch, compressai) happen inside the commands, so that
``aecodec --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import click

from aecodec.api import DEFAULT_QUALITY, QUALITIES

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


def _check_output(out: str, force: bool) -> None:
    if out == "-":
        return
    p = Path(out)
    if p.is_dir():
        raise UsageProblem(f"{out}: is a directory")
    if not p.parent.is_dir():
        raise DataError(f"{out}: output directory {str(p.parent)!r} does not exist")
    if p.exists() and not force:
        raise UsageProblem(f"{out} exists; use -f to overwrite or -o to choose another name")


def _write_output(out: str, data: bytes, force: bool) -> None:
    """Write atomically: a temporary file in the target directory, then rename.

    Without ``force`` the final step is a hard link, which fails if the name
    appeared meanwhile, so nothing is ever overwritten by accident.
    """
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    import tempfile

    p = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
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


QUALITY_HELP = f"quality level {QUALITIES[0]} (smallest file) .. {QUALITIES[-1]} (best image)"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show aecodec, file-format, torch and compressai versions.")
def main():
    """aecodec: a learned image codec.

    \b
      aecodec compress photo.png        # -> photo.aec
      aecodec decompress photo.aec      # -> photo.png
      aecodec info photo.aec            # what is in the file

    Exit codes: 0 ok, 1 bad data (unreadable image, corrupt file), 2 bad usage.
    """


@main.command()
@click.argument("input", metavar="IN")
@click.option("-o", "--output", metavar="OUT", help="output file (default: IN with .aec; '-' for stdout)")
@click.option("-q", "--quality", type=click.IntRange(QUALITIES[0], QUALITIES[-1]), default=DEFAULT_QUALITY, show_default=True, help=QUALITY_HELP)
@click.option("-f", "--force", is_flag=True, help="overwrite OUT if it exists")
@click.option("--quiet", is_flag=True, help="no summary line on stderr")
def compress(input: str, output: Optional[str], quality: int, force: bool, quiet: bool):
    """Compress an image (PNG, JPEG, WebP, TIFF, BMP, ...) to an .aec file.

    IN may be '-' to read from stdin (output then defaults to stdout).
    """
    if output is None:
        output = "-" if input == "-" else str(Path(input).with_suffix(".aec"))
    if output != "-" and input != "-" and Path(output).resolve() == Path(input).resolve():
        raise UsageProblem("output would overwrite the input")
    _check_output(output, force)
    raw = _read_input(input)
    t0 = time.time()
    import io

    import aecodec
    from aecodec.image import ImageError, open_image

    try:
        planes = open_image(io.BytesIO(raw), name=input) if raw else None
    except ImageError as e:
        raise DataError(str(e)) from None
    if planes is None:
        raise DataError(f"{input}: empty file")
    try:
        from aecodec.api import compress_planes

        data = compress_planes(planes, quality)
    except aecodec.WeightsError as e:
        raise DataError(str(e)) from None
    _write_output(output, data, force)
    if not quiet:
        bpp = 8 * len(data) / (planes.width * planes.height)
        click.echo(f"{input} -> {output}: {planes.width}x{planes.height} {planes.mode}, q{quality}, "
                   f"{_human(len(data))}, {bpp:.3f} bpp, {time.time() - t0:.2f} s", err=True)


def _image_format_for(path: str) -> str:
    from PIL import Image

    Image.init()
    ext = Path(path).suffix.lower()
    fmt = Image.EXTENSION.get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UsageProblem(f"{path}: cannot tell an image format to write from {ext or 'no extension'!r} "
                           f"(use e.g. .png, .bmp, .tiff, .webp)")
    return fmt


@main.command()
@click.argument("input", metavar="IN")
@click.option("-o", "--output", metavar="OUT",
              help="output image; format from its extension (default: IN with .png; '-' for PNG on stdout)")
@click.option("-f", "--force", is_flag=True, help="overwrite OUT if it exists")
@click.option("--quiet", is_flag=True, help="no summary line on stderr")
def decompress(input: str, output: Optional[str], force: bool, quiet: bool):
    """Decompress an .aec file to an image (PNG unless OUT says otherwise)."""
    if output is None:
        output = "-" if input == "-" else str(Path(input).with_suffix(".png"))
    fmt = "PNG" if output == "-" else _image_format_for(output)
    _check_output(output, force)
    raw = _read_input(input)
    t0 = time.time()
    import io

    import aecodec

    try:
        img = aecodec.decompress(raw)
    except aecodec.FormatError as e:
        raise DataError(f"{input}: {e}") from None
    except aecodec.WeightsError as e:
        raise DataError(str(e)) from None
    buf = io.BytesIO()
    try:
        if fmt == "JPEG" and img.mode in ("LA", "RGBA"):
            raise UsageProblem(f"{output}: JPEG cannot hold the alpha channel; use .png")
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError) as e:
        raise UsageProblem(f"{output}: cannot save a {img.mode} image as {fmt} ({e})") from None
    _write_output(output, buf.getvalue(), force)
    if not quiet:
        click.echo(f"{input} -> {output}: {img.width}x{img.height} {img.mode}, "
                   f"{time.time() - t0:.2f} s", err=True)


@main.command()
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def info(file: str, as_json: bool):
    """Describe an .aec file: size, quality, model, colour mode (no decoding)."""
    raw = _read_input(file)
    import aecodec

    try:
        d = aecodec.info(raw)
    except aecodec.FormatError as e:
        raise DataError(f"{file}: {e}") from None
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{file}: aecodec file, format version {d['format_version']}\n"
               f"  image     {d['width']}x{d['height']} {d['mode']}\n"
               f"  quality   {d['quality']}\n"
               f"  model     {d['model']}\n"
               f"  latents   y {d['y_shape'][0]}x{d['y_shape'][1]}, z {d['z_shape'][0]}x{d['z_shape'][1]}\n"
               f"  size      {d['file_bytes']} bytes, {d['bpp']:.4f} bpp "
               f"(y {d['chunks'].get('YSTR', 0)} B, z {d['chunks'].get('ZSTR', 0)} B"
               + (f", alpha {d['chunks']['ALPH']} B" if 'ALPH' in d['chunks'] else "") + ")")


if __name__ == "__main__":  # pragma: no cover
    main()
