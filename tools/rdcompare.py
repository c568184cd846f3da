"""The figures of a weights release, from benchmark results (no measuring).

    python tools/rdcompare.py benchmarks/kodak [--previous OLD.json] [--image kodim23.png --quality 6]

Reads DIR/aecodec.json (what `aecodec bench` wrote) and the classical codecs' curves in the same
folder, and prints in Markdown:

- the per-level table (bpp, PSNR-RGB, MS-SSIM; with --previous, the change at each level);
- BD-rate (PSNR / MS-SSIM dB, PCHIP, the project's own bdrate module) against each codec and
  against the previous release;
- the PSNR gap at equal rate against each codec, at each of aecodec's rates (where the codec's
  curve covers that rate);
- with --image/--quality, that image's bpp and PSNR (from DIR/per-image/aecodec.jsonl).

The previous release's results are in git: `git show REV:benchmarks/kodak/aecodec.json > old.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_ANCHORS = "jpeg-420,webp,jxl,heic-444,avif-444"
MIN_OVERLAP = 0.75  # a BD-rate over less of aecodec's quality span than this is flagged


def _import_bdrate():
    try:
        from aecodec import bdrate
    except ImportError:  # run from a checkout without an install
        import importlib.util

        spec = importlib.util.spec_from_file_location("aecodec_bdrate", ROOT / "codec" / "bdrate.py")
        bdrate = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bdrate)
    return bdrate


def load_curve(path: Path) -> dict:
    """(bpp, psnr, ms-ssim, quality) arrays of a CompressAI-format results file, sorted by rate."""
    try:
        d = json.loads(Path(path).read_text())
        r = d["results"]
        bpp = np.asarray(r["bpp"], float)
        psnr = np.asarray(r["psnr-rgb"], float)
        ms = np.asarray(r.get("ms-ssim-rgb", [np.nan] * len(bpp)), float)
        q = list(r.get("quality", range(1, len(bpp) + 1)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {path} is not a benchmark results file ({e})") from None
    order = np.argsort(bpp)
    model = ((d.get("meta") or {}).get("versions") or {}).get("aecodec model")
    return {"bpp": bpp[order], "psnr": psnr[order], "ms": ms[order], "quality": [q[i] for i in order],
            "name": d.get("name", Path(path).stem), "model": model}


def model_warning(curve: dict, path) -> str:
    """A note when an aecodec results file was measured with weights other than the shipped default
    (e.g. a bench run of new weights that stopped before any complete point left the old file)."""
    if not curve.get("model"):
        return ""
    try:
        from aecodec.weights import default_model_id

        shipped = default_model_id()
    except Exception:  # no install, or no manifest: nothing to compare with
        return ""
    if curve["model"] == shipped:
        return ""
    return f"warning: {path} was measured with {curve['model']}, not the shipped default {shipped}"


def psnr_at_rate(curve: dict, bpp: float) -> float:
    """The curve's PSNR at a rate (PCHIP in log-rate); NaN outside the curve's range."""
    from scipy.interpolate import PchipInterpolator

    r = np.log(curve["bpp"])
    if not r[0] <= np.log(bpp) <= r[-1]:
        return float("nan")
    return float(PchipInterpolator(r, curve["psnr"])(np.log(bpp)))


def _levels(curve: dict, levels) -> dict:
    """The curve at those quality levels only."""
    keep = [i for i, q in enumerate(curve["quality"]) if q in set(levels)]
    return {**{k: curve[k][keep] for k in ("bpp", "psnr", "ms")}, "quality": [curve["quality"][i] for i in keep],
            "name": curve["name"]}


def report(new: dict, anchors: dict, previous: dict = None) -> str:
    bd = _import_bdrate()
    lines = ["| q | bpp | PSNR (dB) | MS-SSIM |" + (" Δbpp | ΔPSNR |" if previous else ""),
             "| ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if previous else "")]
    prev_at = {q: i for i, q in enumerate(previous["quality"])} if previous else {}
    for i, q in enumerate(new["quality"]):
        row = f"| {q} | {new['bpp'][i]:.3f} | {new['psnr'][i]:.2f} | {new['ms'][i]:.4f} |"
        if previous:
            j = prev_at.get(q)
            row += (f" {100 * (new['bpp'][i] / previous['bpp'][j] - 1):+.1f} % | "
                    f"{new['psnr'][i] - previous['psnr'][j]:+.2f} |" if j is not None else " | |")
        lines.append(row)
    lines += ["", "| against | BD-rate PSNR | BD-rate MS-SSIM dB |", "| --- | ---: | ---: |"]
    others = dict(anchors)
    if previous:
        others["previous release"] = previous
    overlaps = []

    def fmt(reported, name, metric):
        r, why = reported
        if r is None:
            return f"– ({why})"
        share = r.test_fraction  # the anchors' curves span far more than aecodec's: judge by aecodec's
        overlaps.append(f"{name} {metric} {r.lo:.2f}–{r.hi:.2f} dB" + (f" ({share:.0%} of aecodec's span)"
                                                                        if share < MIN_OVERLAP else ""))
        return f"{r.rate:+.1f} %" + (f" (overlap {share:.0%})" if share < MIN_OVERLAP else "")

    for name, c in others.items():
        t = new
        if name == "previous release" and sorted(c["quality"]) != sorted(new["quality"]):
            # a BD-rate between two grids of the same weights is not zero: compare the levels both have
            common = sorted(set(c["quality"]) & set(new["quality"]))
            c, t = _levels(c, common), _levels(new, common)
            name = f"previous release (levels {', '.join(map(str, common)) or 'none'} in common)"
        p = bd.bd_rate_reported(c["bpp"], c["psnr"], t["bpp"], t["psnr"])
        m = bd.bd_rate_reported(c["bpp"], bd.msssim_db(c["ms"]), t["bpp"], bd.msssim_db(t["ms"]))
        lines.append(f"| {name} | {fmt(p, name, 'PSNR')} | {fmt(m, name, 'MS-SSIM')} |")
    if overlaps:
        lines += ["", f"Overlaps (a BD-rate over less than {MIN_OVERLAP:.0%} of aecodec's quality span is "
                  "marked): " + "; ".join(overlaps) + "."]
    lines += ["", "PSNR gap at equal rate (aecodec minus codec, dB), per aecodec level:", ""]
    lines.append("| codec | " + " | ".join(f"q{q}" for q in new["quality"]) + " |")
    lines.append("| --- |" + " ---: |" * len(new["quality"]))
    for name, c in anchors.items():
        gaps = [new["psnr"][i] - psnr_at_rate(c, b) for i, b in enumerate(new["bpp"])]
        lines.append(f"| {name} | " + " | ".join("–" if np.isnan(g) else f"{g:+.2f}" for g in gaps) + " |")
    return "\n".join(lines)


def image_point(per_image: Path, image: str, quality: int) -> str:
    for line in per_image.read_text().splitlines():
        r = json.loads(line)
        if r.get("image") == image and int(r.get("quality", -1)) == quality:
            return f"{image} at quality {quality}: {r['psnr_rgb']:.2f} dB at {r['bpp']:.3f} bpp"
    raise SystemExit(f"error: no {image} at quality {quality} in {per_image}")


def main(argv=None) -> int:
    try:
        from aecodec._argparse import OneLineParser as Parser
    except ImportError:  # run from a checkout without an install: argparse's own errors
        Parser = argparse.ArgumentParser

    p = Parser(prog="python tools/rdcompare.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="a benchmark folder (with aecodec.json) or an aecodec.json")
    p.add_argument("--previous", help="the previous release's aecodec.json")
    p.add_argument("--anchors", default=DEFAULT_ANCHORS,
                   help=f"codecs to compare with, by their NAME.json files (default: {DEFAULT_ANCHORS})")
    p.add_argument("--anchor-dir", help="where the codecs' NAME.json are (default: the results folder)")
    p.add_argument("--image", help="also print this image's point, e.g. kodim23.png")
    p.add_argument("--quality", type=int, help="the level of --image (default: 6)")
    a = p.parse_args(argv)
    res = Path(a.results)
    folder = res if res.is_dir() else res.parent
    new_path = res / "aecodec.json" if res.is_dir() else res
    if not new_path.exists():
        p.error(f"no {new_path}")
    new = load_curve(new_path)
    warn = model_warning(new, new_path)
    if warn:
        print(warn, file=sys.stderr)
    adir = Path(a.anchor_dir) if a.anchor_dir else folder
    anchors = {}
    for name in [n for n in a.anchors.split(",") if n]:
        f = adir / f"{name}.json"
        if not f.exists():
            p.error(f"no results for {name!r} in {adir}")
        anchors[name] = load_curve(f)
    if a.quality is not None and not a.image:
        p.error("--quality is the level of --image: give --image too")
    previous = load_curve(Path(a.previous)) if a.previous else None
    if previous is not None and previous["name"] != new["name"]:
        p.error(f"--previous {a.previous} holds {previous['name']!r} results, not {new['name']!r}")
    level = 6 if a.quality is None else a.quality
    point = image_point(folder / "per-image" / "aecodec.jsonl", a.image, level) if a.image else None
    print(report(new, anchors, previous))  # after every check: no tables, then an error
    if point:
        print()
        print(point)
    return 0


if __name__ == "__main__":
    try:
        from aecodec._argparse import run_main
    except ImportError:  # run from a checkout without an install
        sys.exit(main())
    sys.exit(run_main(main))
