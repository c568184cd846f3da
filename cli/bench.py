"""``aecodec bench``: a thin command over :mod:`aecodec.bench`.

Nothing heavy is imported until the command runs, so registering it keeps
``aecodec --help`` fast.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Tuple

import click

_DEFAULT_CODECS = "aecodec,jpeg-420,jpeg-444,webp,avif-444,heic-444,jxl,jpeg2000,msh-random"


# the command line's one-line errors (exit 1 bad data, 2 bad usage); the package
# defines them before it imports this module
from aecodec.cli import DataError as _DataError, UsageProblem as _UsageProblem  # noqa: E402
from aecodec.cli import _install_signal_handlers, _Terminated  # noqa: E402


def _floats(spec: str, what: str) -> Tuple[float, ...]:
    if spec.strip().lower() in ("", "none", "0"):
        return ()
    try:
        vals = tuple(float(v) for v in spec.split(",") if v.strip())
    except ValueError:
        raise _UsageProblem(f"{what}: expected comma-separated numbers, got {spec!r}") from None
    if any(v <= 0 for v in vals):
        raise _UsageProblem(f"{what}: sizes must be positive")
    return vals


@click.command()
@click.argument("dataset_dir", metavar="DATASET_DIR")
@click.option("--codecs", default="default", show_default=True, metavar="LIST",
              help=f"comma-separated codecs; 'default' is {_DEFAULT_CODECS}; 'all' adds heic-444-tunepsnr, "
                   "jpeg2000-nomct")
@click.option("-o", "--out", metavar="DIR", help="output folder (default: benchmarks/<name of DATASET_DIR>)")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="worker processes, one thread each  [default: number of cores]")
@click.option("--points", type=click.IntRange(2), default=None, metavar="N",
              help="a short sweep: N points of each codec's quality grid (ends kept)")
@click.option("--grid", "grids", multiple=True, metavar="CODEC=Q1,Q2,...",
              help="this codec's quality grid instead of its default (repeatable)")
@click.option("--anchors", default="jpeg-420,webp,heic-444", show_default=True, metavar="LIST",
              help="the codecs the BD-rate tables compare against")
@click.option("--scaling-sizes", default="0.25,1,4,16", show_default=True, metavar="MPX",
              help="image sizes in megapixels for the speed/memory-against-size table; 'none' to skip")
@click.option("--scaling-codecs", default=None, metavar="LIST",
              help="codecs for the size table [default: those of the run]")
@click.option("--no-coldstart", is_flag=True, help="do not time the command line's cold start")
@click.option("--reference-dir", metavar="DIR",
              help="CompressAI published curves to draw dashed (default: ../anchors/<dataset> beside the data)")
@click.option("--measured-dir", metavar="DIR",
              help="measured anchors to check agreement with (default: ../anchors/<dataset>-measured)")
@click.option("--no-reference", is_flag=True, help="no published curves, no agreement check")
@click.option("--readme", metavar="FILE",
              help="a README whose bench-results section to refresh (default: OUT/../README.md, unless its "
                   "section shows another folder's results)")
@click.option("--report-only", is_flag=True, help="measure nothing: rebuild every output from the stored points")
@click.option("--quiet", is_flag=True, help="no progress bar")
def bench(dataset_dir: str, codecs: str, out: Optional[str], jobs: Optional[int], points: Optional[int],
          grids: Tuple[str, ...], anchors: str, scaling_sizes: str, scaling_codecs: Optional[str],
          no_coldstart: bool, reference_dir: Optional[str], measured_dir: Optional[str], no_reference: bool,
          readme: Optional[str], report_only: bool, quiet: bool):
    """Benchmark aecodec against JPEG, WebP, AVIF, HEVC intra, JPEG XL and JPEG 2000.

    Measures rate (bpp from the real files), PSNR-RGB, MS-SSIM, encode/decode time
    and memory on every lossless image (PNG, PPM, PGM, BMP, TIFF) directly in
    DATASET_DIR (others are left out, with a note), and writes CompressAI-format JSON,
    RD plots, BD-rate tables and RESULTS.md into OUT. Points already measured
    (same codec version or weights, same image) are reused, so an interrupted run
    resumes where it stopped.

    \b
      aecodec bench ../shared/data/kodak            # the full Kodak run
      aecodec bench DIR --points 4 --codecs aecodec,jpeg-420 --scaling-sizes none --no-coldstart
    """
    from aecodec import bench as B

    try:
        names = B.parse_codecs(codecs)
        grid_over = dict(B.parse_grid(g) for g in grids)
        anchor_names = tuple(a.strip() for a in anchors.split(",") if a.strip())
        for a in anchor_names:
            B.get_codec(a)
        sc = B.parse_codecs(scaling_codecs) if scaling_codecs else None
    except B.BenchUsageError as e:
        raise _UsageProblem(str(e)) from None
    for g in grid_over:
        if g not in names:
            raise _UsageProblem(f"--grid {g}=...: {g} is not among the codecs of this run (--codecs)")
    for n in names:
        why = B.get_codec(n).available()
        if why and codecs != "default":
            raise _UsageProblem(f"{n}: {why}")
    sizes = _floats(scaling_sizes, "--scaling-sizes")
    dataset = Path(dataset_dir)
    if dataset.exists() and not dataset.is_dir():
        raise _UsageProblem(f"{dataset_dir}: a file; DATASET_DIR is a folder of images")
    if not dataset.is_dir():
        raise _DataError(f"{dataset_dir}: no such directory")
    out_dir = Path(out) if out else Path("benchmarks") / dataset.resolve().name
    ref_default, meas_default = B.default_side_dirs(dataset)
    ref = None if no_reference else (Path(reference_dir) if reference_dir else ref_default)
    meas = None if no_reference else (Path(measured_dir) if measured_dir else meas_default)
    cfg = B.BenchConfig(
        dataset=dataset, out=out_dir, codecs=names, grids=grid_over, points=points,
        jobs=jobs or B.default_jobs(), anchors=anchor_names, scaling_mp=sizes, scaling_codecs=sc,
        coldstart=not no_coldstart, reference_dir=ref, measured_dir=meas,
        readme=Path(readme) if readme else None, measure=not report_only,
        command="aecodec bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "bench" else "",
    )

    def progress(total=0, desc=""):
        from tqdm import tqdm

        tty = sys.stderr.isatty()  # into a log file: an update about every 30 s, not one per point
        return tqdm(total=total, desc=desc, unit="pt" if desc == "points" else "run", file=sys.stderr,
                    disable=quiet, dynamic_ncols=True, leave=True, mininterval=0.1 if tty else 30)

    def log(msg: str) -> None:
        if not quiet:
            click.echo(f"aecodec bench: {msg}", err=True)

    _install_signal_handlers()  # SIGTERM: the same clean stop as Ctrl-C (workers stopped, points kept)
    try:
        s = B.run_bench(cfg, progress=progress, log=log)
    except _Terminated:
        click.echo("aecodec bench: terminated; the points measured so far are kept, run again to resume", err=True)
        sys.exit(143)
    except B.BenchUsageError as e:
        raise _UsageProblem(str(e)) from None
    except B.BenchError as e:
        raise _DataError(str(e)) from None
    except KeyboardInterrupt:
        click.echo("aecodec bench: interrupted; the points measured so far are kept, run again to resume",
                   err=True)
        sys.exit(130)
    click.echo(f"{s['new_points']} points measured, {s['reused_points']} reused, {s['seconds']:.0f} s; "
               f"results in {out_dir}{os.sep}RESULTS.md" + (f", {s['readme']} updated" if s.get("readme") else ""))
