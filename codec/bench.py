"""Rate-distortion and speed benchmark of aecodec against classical codecs.

The library behind ``aecodec bench``.  For every codec, image and quality
setting it encodes the 8-bit RGB image in memory, counts the real encoded bytes
(containers and headers included), decodes them back to 8-bit RGB and measures:

* bpp = 8 * bytes / (width * height);
* PSNR-RGB = 10 log10(255^2 / MSE), MSE over all three channels of the uint8
  images;
* MS-SSIM with ``pytorch_msssim.ms_ssim(data_range=255)`` (RGB, 5 scales,
  11x11 Gaussian window).  It needs at least 161 pixels per side: on smaller
  images it is not computed (NaN in the tables, ``null`` in the JSON);
* encode and decode wall-clock time (one run each, one thread per worker) and
  the peak extra memory of each (the rise of the process's peak RSS, reset
  before each step through ``/proc/self/clear_refs``).

Results are stored per image, one JSON line per point, in
``OUT/per-image/<codec>.jsonl``.  Each line carries the codec's *key* (a hash of
its settings and library versions; for aecodec the model identifier, which
contains a digest of the weights) and the image's sha256, so a later run reuses
every point whose key and image are unchanged: a run can be interrupted and
resumed, or done one codec at a time.

From the stored points it writes, into OUT: one CompressAI-format JSON per codec
(means per quality point), RD plots (PSNR-RGB and MS-SSIM dB against bpp) with
CompressAI's published curves drawn dashed, BD-rate tables (PCHIP) against two
anchor codecs, the speed tables (per image, against image size, cold start of
the CLI) and ``RESULTS.md`` with all of it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .bdrate import METHOD as BD_METHOD
from .bdrate import MIN_POINTS, bd_rate_reported, msssim_db

IMAGE_SUFFIXES = (".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")
MSSSIM_MIN_SIDE = 161  # pytorch_msssim with the default 11x11 window and 5 scales
DEFAULT_ANCHORS = ("jpeg-420", "webp", "heic-444")
DEFAULT_SCALING_MP = (0.25, 1.0, 4.0, 16.0)
HEAVY_MP = 8.0  # above this, torch codecs in the size table run one at a time (about 0.5 GiB per Mpx)
# CompressAI's published Kodak curves drawn (dashed) in the plots and listed in the BD tables.
DEFAULT_REFERENCES = (
    "jpeg.json",
    "bpg_444_x265_ycbcr.json",
    "vtm.json",
    "compressai-bmshj2018-hyperprior_mse_cuda.json",
    "compressai-mbt2018-mean_mse_cuda.json",
)
README_START = "<!-- bench-results:start -->"
README_END = "<!-- bench-results:end -->"


class BenchError(RuntimeError):
    """Bad data: no images, an unreadable image, a codec that failed."""


class BenchUsageError(ValueError):
    """Bad usage: unknown codec, malformed option."""


# ---------------------------------------------------------------------------
# versions and machine


def _pkg_version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


_VERSIONS: Optional[Dict[str, str]] = None


def library_versions() -> Dict[str, str]:
    """Versions of everything that can change a number in the tables (read at run time)."""
    global _VERSIONS
    if _VERSIONS is not None:
        return dict(_VERSIONS)
    from PIL import features

    v: Dict[str, str] = {"python": platform.python_version()}
    try:
        import aecodec
        from aecodec.format import FORMAT_VERSION

        v["aecodec"] = aecodec.__version__
        v["aecodec file format"] = str(FORMAT_VERSION)
    except Exception:  # pragma: no cover
        pass
    try:
        from .weights import read_manifest

        v["aecodec model"] = read_manifest()["default"]
    except Exception:
        v["aecodec model"] = "unavailable"
    for pkg in ("torch", "compressai", "numpy", "Pillow"):
        v[pkg] = _pkg_version(pkg) or "not installed"
    for key, feat in (("libjpeg-turbo", "libjpeg_turbo"), ("libwebp", "webp"), ("libavif", "avif"),
                      ("openjpeg", "jpg_2000")):
        try:
            v[key] = features.version(feat) or "unavailable"
        except Exception:
            v[key] = "unavailable"
    try:
        from PIL import _avif

        v["libavif codecs"] = _avif.codec_versions()
    except Exception:
        pass
    ph = _pkg_version("pillow-heif")
    if ph:
        v["pillow-heif"] = ph
        try:
            import pillow_heif

            info = pillow_heif.libheif_info()
            v["libheif"] = info.get("libheif", "")
            v["x265"] = info.get("encoders", {}).get("x265", "")
            v["libde265"] = info.get("decoders", {}).get("libde265", "")
        except Exception:
            pass
    pj = _pkg_version("pillow-jxl-plugin")
    if pj:
        v["pillow-jxl-plugin"] = pj
        v["libjxl"] = _libjxl_version() or "unknown"
    for pkg in ("pytorch-msssim", "scipy", "matplotlib"):
        v[pkg] = _pkg_version(pkg) or "not installed"
    _VERSIONS = v
    return dict(v)


def _libjxl_version() -> Optional[str]:
    """pillow-jxl-plugin does not report it; its extension embeds the jpegxl-rs
    crate path, which names the bundled libjxl (``jpegxl-rs-X+libjxl-Y``)."""
    import re

    try:
        import pillow_jxl.pillow_jxl as ext

        blob = Path(ext.__file__).read_bytes()
    except Exception:
        return None
    m = re.search(rb"\+libjxl-([0-9]+\.[0-9]+\.[0-9]+)", blob)
    return m.group(1).decode() if m else None


def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:  # pragma: no cover
        load = "?"
    return {"cpu": cpu, "cores": str(cores), "memory": mem,
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "load average at start": load}


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------
# codecs


class Codec:
    """One codec at fixed settings, swept over a quality grid."""

    name = ""
    grid: Tuple = ()
    qrange: Tuple[float, float] = (0, 100)  # the qualities its setting takes (--grid is checked against it)
    speed_only = False  # timed, but its rate/quality mean nothing (random weights)
    uses_torch = False
    packages: Tuple[str, ...] = ()  # (pip name, import name) pairs needed
    version_keys: Tuple[str, ...] = ()

    def available(self) -> Optional[str]:
        """None if usable, else why not."""
        import importlib

        for pip_name, mod in self.packages:
            try:
                importlib.import_module(mod)
            except Exception:
                return f"{pip_name} is not installed (pip install 'aecodec[bench]')"
        return None

    def setup(self) -> None:
        """Once per process, before the first encode."""

    def settings(self) -> str:
        raise NotImplementedError

    def versions(self) -> Dict[str, str]:
        v = library_versions()
        return {k: v.get(k, "unknown") for k in self.version_keys}

    def description(self) -> str:
        return "; ".join(f"{k} {v}" for k, v in self.versions().items()) + "; " + self.settings()

    def key(self) -> str:
        blob = json.dumps([self.name, self.settings(), self.versions()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def prepare(self, rgb: np.ndarray):
        """What encode() takes (made outside the timed section)."""
        return rgb

    def encode(self, obj, quality) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError


class PillowCodec(Codec):
    fmt = ""

    def save_kwargs(self, quality) -> Dict:
        raise NotImplementedError

    def prepare(self, rgb):
        return Image.fromarray(rgb, "RGB")

    def encode(self, im, quality) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format=self.fmt, **self.save_kwargs(quality))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))


class JPEG(PillowCodec):
    fmt = "JPEG"
    version_keys = ("Pillow", "libjpeg-turbo")

    def __init__(self, subsampling: int):
        self.subsampling = subsampling
        self.name = {2: "jpeg-420", 0: "jpeg-444"}[subsampling]
        self.grid = (3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 85, 90) if subsampling == 2 else \
            (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 85, 90)

    def settings(self):
        ss = {2: "4:2:0", 0: "4:4:4"}[self.subsampling]
        return (f"Pillow JPEG (libjpeg-turbo), quality=Q, subsampling={self.subsampling} ({ss}), "
                f"optimize=True, baseline (non-progressive), default quantisation tables")

    def save_kwargs(self, q):
        return {"quality": int(q), "subsampling": self.subsampling, "optimize": True}


class WebP(PillowCodec):
    name = "webp"
    fmt = "WEBP"
    grid = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95)
    version_keys = ("Pillow", "libwebp")

    def settings(self):
        return "Pillow WebP (libwebp), lossy, quality=Q, method=6 (lossy VP8 is always 4:2:0)"

    def save_kwargs(self, q):
        return {"quality": int(q), "method": 6, "lossless": False}


class AVIF(PillowCodec):
    name = "avif-444"
    fmt = "AVIF"
    grid = (5, 10, 20, 30, 40, 50, 60, 65, 70, 75, 80, 85, 90)
    version_keys = ("Pillow", "libavif", "libavif codecs")

    def available(self):
        from PIL import features

        return None if features.check("avif") else "this Pillow has no AVIF support (Pillow >= 11.3 needed)"

    def setup(self):
        from PIL import AvifImagePlugin

        AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # the decoder's threads

    def settings(self):
        return ("Pillow AVIF (libavif + aom), quality=Q, speed=6, subsampling='4:4:4', codec='aom', "
                "range='full', max_threads=1 (encoder and decoder), 8-bit")

    def save_kwargs(self, q):
        return {"quality": int(q), "speed": 6, "subsampling": "4:4:4", "codec": "aom", "range": "full",
                "max_threads": 1}


class HEIC(PillowCodec):
    fmt = "HEIF"
    packages = (("pillow-heif", "pillow_heif"),)
    version_keys = ("pillow-heif", "libheif", "x265", "libde265")

    def __init__(self, tune: Optional[str] = None):
        self.tune = tune
        self.name = "heic-444" if tune is None else f"heic-444-tune{tune}"
        self.grid = (10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65) if tune is None else \
            (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60)

    def setup(self):
        import pillow_heif

        pillow_heif.register_heif_opener()
        pillow_heif.options.DECODE_THREADS = 1

    def settings(self):
        tune = "libheif x265 defaults preset=slow tune=ssim" if self.tune is None else \
            f"x265 preset=slow tune={self.tune}"
        return (f"pillow-heif -> libheif (x265 HEVC intra), quality=Q, chroma=444, {tune}, "
                f"x265:pools=1 (1 thread), 8-bit, nclx BT.601 full range (pillow-heif default); "
                f"decoder libde265 with 1 thread")

    def save_kwargs(self, q):
        params = {"x265:pools": "1"}
        if self.tune:
            params["tune"] = self.tune
        return {"quality": int(q), "chroma": 444, "enc_params": params}


class JXL(PillowCodec):
    name = "jxl"
    fmt = "JXL"
    grid = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 93)
    packages = (("pillow-jxl-plugin", "pillow_jxl"),)
    version_keys = ("pillow-jxl-plugin", "libjxl")

    def setup(self):
        import pillow_jxl.JpegXLImagePlugin as plugin

        plugin.DECODE_THREADS = 0  # 0 = no decoder thread pool

    def settings(self):
        return ("pillow-jxl-plugin (libjxl), lossy VarDCT, quality=Q (libjxl distance from quality), "
                "effort=7, decoding_speed=0, num_threads=1, decoder threads disabled")

    def save_kwargs(self, q):
        return {"quality": int(q), "effort": 7, "decoding_speed": 0, "num_threads": 1}


class JPEG2000(PillowCodec):
    fmt = "JPEG2000"
    grid = (240.0, 192.0, 160.0, 120.0, 96.0, 80.0, 60.0, 48.0, 32.0, 24.0, 16.0, 12.0, 9.6)
    qrange = (1.0, 10000.0)  # compression ratio against 24-bit RGB
    version_keys = ("Pillow", "openjpeg")

    def __init__(self, mct: int = 1):
        self.mct = mct
        self.name = "jpeg2000" if mct else "jpeg2000-nomct"

    def available(self):
        from PIL import features

        return None if features.check("jpg_2000") else "this Pillow has no JPEG 2000 (openjpeg) support"

    def settings(self):
        mct = "mct=1 (ICT colour transform)" if self.mct else "mct=0 (Pillow's default: no colour transform)"
        return (f"Pillow JPEG2000 (OpenJPEG), JP2 container, quality_mode='rates', quality_layers=[Q] "
                f"(Q = compression ratio against 24-bit RGB: target 24/Q bpp), irreversible=True (9/7 wavelet), "
                f"{mct}, other settings Pillow defaults")

    def save_kwargs(self, q):
        return {"quality_mode": "rates", "quality_layers": [float(q)], "irreversible": True, "mct": self.mct}


class AECodec(Codec):
    name = "aecodec"
    uses_torch = True
    version_keys = ("aecodec", "aecodec file format", "aecodec model", "torch", "compressai")

    def __init__(self):
        from .api import QUALITIES

        self.grid = tuple(QUALITIES)
        self.qrange = (QUALITIES[0], QUALITIES[-1])  # --grid may also take qualities between levels (6.5)

    def available(self):
        try:
            from .weights import load_model  # noqa: F401
            from .weights import read_manifest

            read_manifest()
        except Exception as e:
            return f"no usable weights ({e})"
        return None

    def setup(self):
        from .weights import load_model

        load_model()

    def settings(self):
        return ("aecodec.compress(image, quality=Q) -> .aec file (container, header and checksum included); "
                "aecodec.decompress; one torch thread")

    def encode(self, rgb, q) -> bytes:
        import aecodec

        return aecodec.compress(rgb, quality=q)

    def decode(self, data: bytes) -> np.ndarray:
        import aecodec

        return np.asarray(aecodec.decompress(data).convert("RGB"))


class MSHRandom(Codec):
    """compressai's MeanScaleHyperprior(128, 192) with random weights (seed 0), for timing
    only: the published architecture at the size of aecodec's default model."""

    name = "msh-random"
    grid = (0,)
    qrange = (0, 0)
    speed_only = True
    uses_torch = True
    version_keys = ("compressai", "torch")

    def setup(self):
        import torch

        from ._deps import import_compressai

        import_compressai()
        from compressai.models import MeanScaleHyperprior

        torch.manual_seed(0)
        self.model = MeanScaleHyperprior(128, 192).eval()
        self.model.update(force=True)

    def settings(self):
        return ("compressai.models.MeanScaleHyperprior(N=128, M=192), random weights (torch.manual_seed(0)), "
                "update(); compress/decompress on the image edge-padded to a multiple of 64; one torch thread; "
                "speed only (its rate and quality mean nothing)")

    def encode(self, rgb, q) -> bytes:
        from .api import _to_tensor

        h, w = rgb.shape[:2]
        out = self.model.compress(_to_tensor(rgb))
        (y,), (z,) = out["strings"]
        return struct.pack(">IIHHI", h, w, *out["shape"], len(y)) + y + z

    def decode(self, data: bytes) -> np.ndarray:
        from .api import _to_uint8

        h, w, zh, zw, ny = struct.unpack(">IIHHI", data[:16])
        y, z = data[16:16 + ny], data[16 + ny:]
        out = self.model.decompress([[y], [z]], (zh, zw))
        return _to_uint8(out["x_hat"].clamp_(0, 1), h, w)


_FACTORIES: Dict[str, Callable[[], Codec]] = {
    "aecodec": AECodec,
    "jpeg-420": lambda: JPEG(2),
    "jpeg-444": lambda: JPEG(0),
    "webp": WebP,
    "avif-444": AVIF,
    "heic-444": lambda: HEIC(None),
    "jxl": JXL,
    "jpeg2000": lambda: JPEG2000(1),
    "msh-random": MSHRandom,
    # extras, not in the default run
    "heic-444-tunepsnr": lambda: HEIC("psnr"),
    "jpeg2000-nomct": lambda: JPEG2000(0),
}
CODEC_NAMES = tuple(_FACTORIES)
DEFAULT_CODECS = ("aecodec", "jpeg-420", "jpeg-444", "webp", "avif-444", "heic-444", "jxl", "jpeg2000",
                  "msh-random")
# rough relative cost per point, to start the slow work first (better load balance)
_COST = {"aecodec": 20, "msh-random": 20, "heic-444": 8, "heic-444-tunepsnr": 8, "avif-444": 5, "jxl": 3,
         "jpeg2000": 1.5, "jpeg2000-nomct": 1.5, "webp": 1, "jpeg-420": 0.5, "jpeg-444": 0.5}

_codec_cache: Dict[str, Codec] = {}


def get_codec(name: str, ready: bool = False) -> Codec:
    """The codec called ``name``; with ``ready``, set up for use in this process."""
    if name not in _FACTORIES:
        raise BenchUsageError(f"unknown codec {name!r} (known: {', '.join(CODEC_NAMES)})")
    c = _codec_cache.get(name)
    if c is None:
        c = _codec_cache[name] = _FACTORIES[name]()
        c._ready = False
    if ready and not c._ready:
        c.setup()
        c._ready = True
    return c


def parse_codecs(spec: str) -> List[str]:
    if spec.strip() in ("all", "*"):
        return list(CODEC_NAMES)
    if spec.strip() == "default":
        return list(DEFAULT_CODECS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise BenchUsageError("no codec given")
    for n in names:
        get_codec(n)
    return list(dict.fromkeys(names))


def parse_grid(spec: str) -> Tuple[str, Tuple]:
    """'CODEC=Q1,Q2,...' -> (codec, grid)."""
    if "=" not in spec:
        raise BenchUsageError(f"--grid {spec!r}: expected CODEC=Q1,Q2,...")
    name, values = spec.split("=", 1)
    name = name.strip()
    codec = get_codec(name)
    parts = [v.strip() for v in values.split(",")]
    if values.strip() and not all(parts):
        raise BenchUsageError(f"--grid {spec!r}: an empty quality between commas")
    try:
        vals = tuple(float(v) for v in parts if v)
    except ValueError:
        raise BenchUsageError(f"--grid {spec!r}: qualities must be numbers") from None
    if not vals:
        raise BenchUsageError(f"--grid {spec!r}: no quality given")
    if len(set(vals)) != len(vals):
        raise BenchUsageError(f"--grid {spec!r}: a quality is given twice")
    lo, hi = codec.qrange
    if name == "aecodec":  # levels, or between them in steps of 0.01
        if any(not lo <= v <= hi or abs(v * 100 - round(v * 100)) > 1e-6 for v in vals):
            raise BenchUsageError(f"--grid {spec!r}: aecodec qualities are {lo:g}..{hi:g} in steps of 0.01")
        from .api import check_quality

        return name, tuple(check_quality(v) for v in vals)
    if any(not lo <= v <= hi for v in vals):
        raise BenchUsageError(f"--grid {spec!r}: {name} qualities are {lo:g}..{hi:g}")
    if all(isinstance(g, int) for g in codec.grid):
        if any(v != int(v) for v in vals):
            raise BenchUsageError(f"--grid {spec!r}: {name} takes integer qualities")
        vals = tuple(int(v) for v in vals)
    return name, vals


def thin_grid(grid: Sequence, n: int) -> Tuple:
    """n points of ``grid``, evenly spread, both ends kept."""
    if n >= len(grid):
        return tuple(grid)
    idx = sorted({int(round(i * (len(grid) - 1) / (n - 1))) for i in range(n)}) if n > 1 else [len(grid) // 2]
    return tuple(grid[i] for i in idx)


def _qkey(q) -> str:
    return repr(float(q))


# ---------------------------------------------------------------------------
# metrics


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all channels of two uint8 images (inf when identical)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(d * d))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two HxWx3 uint8 images (pytorch_msssim, data_range=255);
    NaN when a side is under 161 pixels, where the 5-scale pyramid does not fit."""
    if min(a.shape[0], a.shape[1]) < MSSSIM_MIN_SIDE:
        return float("nan")
    import torch
    from pytorch_msssim import ms_ssim

    _torch_one_thread()
    x = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(b, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return float(ms_ssim(x, y, data_range=255, size_average=True))


# peak memory: Linux resets the peak RSS (VmHWM) when "5" is written to clear_refs


def _status_kib(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak RSS of this process during a block, and its rise over the RSS before it (MiB)."""

    def __enter__(self):
        self.ok = _reset_peak()
        self.before = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        hwm = _status_kib("VmHWM")
        if not self.ok or hwm is None or self.before is None:
            self.peak_mib = self.extra_mib = float("nan")
        else:
            self.peak_mib = hwm / 1024.0
            self.extra_mib = max(0, hwm - self.before) / 1024.0
        return False


# ---------------------------------------------------------------------------
# dataset


@dataclass
class ImageItem:
    path: Path
    name: str
    sha: str
    width: int
    height: int


LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".webp", ".avif", ".heic", ".heif", ".jxl", ".jp2", ".j2k", ".gif")


def list_images(dataset: Path, log: Callable[[str], None] = lambda s: None) -> List[ImageItem]:
    """The lossless images (IMAGE_SUFFIXES) directly in ``dataset``; what is left out is said
    through ``log`` in one line."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise BenchError(f"{dataset}: not a directory")
    items = []
    lossy, other, folders = [], [], []
    for p in sorted(dataset.iterdir()):
        if p.name.startswith("."):  # .DS_Store, editor files: not the user's images
            continue
        if p.is_dir():
            folders.append(p.name)
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            (lossy if p.suffix.lower() in LOSSY_SUFFIXES else other).append(p.name)
            continue
        blob = p.read_bytes()
        try:
            with Image.open(io.BytesIO(blob)) as im:
                w, h = im.size
        except Exception as e:  # Pillow names the BytesIO object: say what is wrong with the file instead
            why = "" if isinstance(e, UnidentifiedImageError) else f" ({' '.join(str(e).split())[:120]})"
            raise BenchError(f"{p}: not an image Pillow can read{why}") from None
        items.append(ImageItem(p, p.name, hashlib.sha256(blob).hexdigest()[:16], w, h))
    left = []
    if lossy:
        left.append(f"{_count(lossy, 'image')} in a format that is usually lossy ({_names(lossy)}: a lossy source "
                    "is no reference; convert to PNG to include it)")
    if other:
        left.append(f"{_count(other, 'other file')} ({_names(other)})")
    if folders:
        left.append(f"{_count(folders, 'folder')} ({_names(folders)}: not searched)")
    if left:
        log(f"{dataset}: left out " + "; ".join(left))
    if not items:
        raise BenchError(f"{dataset}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return items


def _count(names: List[str], what: str) -> str:
    return f"{len(names)} {what}{'' if len(names) == 1 else 's'}"


def _names(names: List[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_rgb(path) -> np.ndarray:
    """The image as 8-bit RGB, as ``aecodec compress`` reads it (16-bit samples reduced to the
    nearest 8-bit level, not clipped; EXIF orientation applied), alpha left out: every codec
    is measured on these pixels."""
    from .image import ImageError, open_image

    try:
        return open_image(path).rgb
    except ImageError as e:
        raise BenchError(str(e)) from None
    except Exception as e:
        raise BenchError(f"{path}: cannot read image ({e})") from None


# ---------------------------------------------------------------------------
# measuring one point (runs in worker processes)

_images: Dict[str, np.ndarray] = {}
_warm: set = set()


def _init_worker() -> None:
    """Worker processes: one thread for torch (set before and after its import) and BLAS."""
    global _in_worker
    _in_worker = True
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    _torch_one_thread()


_in_worker = False


def _torch_one_thread() -> None:
    """In a worker, once torch is imported: one intra-op thread (torch is not imported just for this)."""
    if _in_worker and "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)


def _timed_roundtrip(codec: Codec, rgb: np.ndarray, quality):
    """One timed encode and one timed decode, each under its own peak-memory probe."""
    obj = codec.prepare(rgb)
    with PeakMemory() as m_enc:
        t0 = time.perf_counter()
        data = codec.encode(obj, quality)
        enc_s = time.perf_counter() - t0
    del obj
    with PeakMemory() as m_dec:
        t0 = time.perf_counter()
        out = codec.decode(data)
        dec_s = time.perf_counter() - t0
    return data, out, enc_s, dec_s, m_enc, m_dec


def measure_point(codec: Codec, rgb: np.ndarray, quality, metrics: bool = True) -> Dict:
    """Encode and decode one image at one quality; sizes, distortion, times, memory."""
    data, out, enc_s, dec_s, m_enc, m_dec = _timed_roundtrip(codec, rgb, quality)
    if out.shape != rgb.shape or out.dtype != np.uint8:
        raise BenchError(f"{codec.name}: decoded image is {out.shape} {out.dtype}, expected {rgb.shape} uint8")
    h, w = rgb.shape[:2]
    row = {"bytes": len(data), "bpp": 8.0 * len(data) / (w * h), "enc_s": enc_s, "dec_s": dec_s,
           "enc_mem_mib": m_enc.extra_mib, "dec_mem_mib": m_dec.extra_mib}
    if metrics and not codec.speed_only:
        row["psnr_rgb"] = psnr_rgb(rgb, out)
        row["ms_ssim"] = ms_ssim_rgb(rgb, out)
    return row


def _warm_up(codec: Codec, rgb: np.ndarray) -> None:
    """Torch codecs: one untimed run per image shape (oneDNN builds its kernels per shape)."""
    shape = (codec.name, rgb.shape)
    if codec.uses_torch and shape not in _warm:
        codec.decode(codec.encode(codec.prepare(rgb), codec.grid[len(codec.grid) // 2]))
        _warm.add(shape)


def _task(args) -> Dict:
    name, path, quality = args
    try:
        codec = get_codec(name, ready=True)
        _torch_one_thread()
        rgb = _images.get(path)
        if rgb is None:
            rgb = _images[path] = load_rgb(path)
        _warm_up(codec, rgb)
        row = measure_point(codec, rgb, quality)
    except BenchError as e:
        return {"error": str(e)}
    except Exception as e:
        return {"error": f"{name} failed on {Path(path).name} at quality {quality}: {type(e).__name__}: {e}"}
    row["quality"] = quality
    row["path"] = path
    return row


# ---------------------------------------------------------------------------
# the store of measured points


def _clean(v):
    """JSON-safe: NaN and inf become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating,)):
        return _clean(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _num(v) -> float:
    return float("nan") if v is None else float(v)


class Store:
    """Append-only JSON-lines file of measured points, one per codec."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: List[Dict] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interrupted run
                if isinstance(r, dict) and "key" in r and "image_sha" in r and "quality" in r:
                    self.rows.append(r)

    def index(self, key: str) -> Dict[Tuple[str, str], Dict]:
        return {(r["image_sha"], _qkey(r["quality"])): r for r in self.rows if r["key"] == key}

    def append(self, row: Dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(_clean(row), sort_keys=True) + "\n")
        self.rows.append(row)

    def compact(self, key: str) -> None:
        """Drop points of other codec versions; sort the rest."""
        keep = sorted(self.index(key).values(), key=lambda r: (r["image"], float(r["quality"])))
        if not keep and not self.path.exists():
            return
        _write_text(self.path, "".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in keep))
        self.rows = keep


# ---------------------------------------------------------------------------
# configuration and the run


@dataclass
class BenchConfig:
    dataset: Path
    out: Path
    codecs: List[str] = field(default_factory=lambda: list(DEFAULT_CODECS))
    grids: Dict[str, Tuple] = field(default_factory=dict)  # overrides
    points: Optional[int] = None  # thin every grid to this many points
    jobs: int = 1
    anchors: Tuple[str, ...] = DEFAULT_ANCHORS
    scaling_mp: Tuple[float, ...] = DEFAULT_SCALING_MP
    scaling_codecs: Optional[List[str]] = None  # default: the codecs of the run
    coldstart: bool = True
    coldstart_runs: int = 3
    reference_dir: Optional[Path] = None  # CompressAI published JSONs (dashed curves)
    references: Tuple[str, ...] = DEFAULT_REFERENCES
    measured_dir: Optional[Path] = None  # measured anchors with per-image CSVs, to compare with
    readme: Optional[Path] = None
    measure: bool = True  # False: only rebuild the outputs from the stored points
    command: str = ""  # the command line that made this, for the report

    def grid(self, name: str) -> Tuple:
        if name in self.grids:
            return tuple(self.grids[name])
        g = get_codec(name).grid
        return thin_grid(g, self.points) if self.points else tuple(g)


def default_side_dirs(dataset: Path) -> Tuple[Optional[Path], Optional[Path]]:
    """shared/data/<set> -> (shared/anchors/<set>, shared/anchors/<set>-measured), where they exist."""
    base = Path(dataset).resolve().parent.parent / "anchors"
    name = Path(dataset).resolve().name
    ref, meas = base / name, base / f"{name}-measured"
    return (ref if ref.is_dir() else None), (meas if meas.is_dir() else None)


class _NoProgress:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s, refresh=True):
        pass

    def close(self):
        pass


def _no_progress(total=0, desc=""):
    return _NoProgress()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pool(jobs: int, max_tasks: Optional[int] = None):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               max_tasks_per_child=max_tasks)


def _run_tasks(fn, tasks: List, jobs: int, on_result, fresh_process: bool = False,
               heavy: Optional[Callable] = None) -> None:
    """fn over tasks, in this process (jobs=1, not fresh) or in spawned workers.

    ``heavy(task)`` marks tasks that must not run two at a time (memory).
    """
    global _in_worker
    if not tasks:
        return
    if jobs <= 1 and not fresh_process:
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else None
        was = _in_worker
        _in_worker = True
        try:
            for t in tasks:
                on_result(t, fn(t))
        finally:
            _in_worker = was
            torch = sys.modules.get("torch")
            if torch is not None and threads is not None:
                torch.set_num_threads(threads)
        return
    from concurrent.futures import FIRST_COMPLETED, wait

    ex = _pool(jobs, 1 if fresh_process else None)
    queue = list(tasks)
    pending: Dict = {}
    limit = jobs if (heavy or fresh_process) else 2 * jobs  # few in flight: an interrupt loses little

    def fill():
        while queue and len(pending) < limit:
            busy = heavy is not None and any(heavy(t) for t in pending.values())
            i = next((i for i, t in enumerate(queue) if not (busy and heavy(t))), None)
            if i is None:
                return
            t = queue.pop(i)
            pending[ex.submit(fn, t)] = t

    try:
        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                t = pending.pop(fut)
                on_result(t, fut.result())
            fill()
    except BaseException:  # Ctrl-C, SIGTERM (the CLI turns it into an exception), an error
        for fut in list(pending):
            fut.cancel()
        # the workers may be minutes into a point: stop them, or they outlive the run (holding its
        # stdout, so that a caller reading it waits for them)
        for proc in list(getattr(ex, "_processes", {}).values()):
            try:
                proc.terminate()
            except Exception:
                pass
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def check_out_dir(out: Path, dataset: Path) -> None:
    """Refuse an OUT that would overwrite someone's files or end up among the images measured."""
    if out.exists() and not out.is_dir():
        raise BenchUsageError(f"{out}: -o names the results folder, and this is a file")
    o, d = out.resolve(), dataset.resolve()
    if o == d or d in o.parents:
        raise BenchUsageError(f"{out} is inside {dataset}: its plots would be measured as images next time; "
                              "write the results elsewhere")
    if out.is_dir() and any(out.iterdir()) and not ((out / "per-image").is_dir()
                                                     or (out / "meta" / "summary.json").is_file()):
        raise BenchUsageError(f"{out} holds files that aecodec bench did not write (no per-image/ folder); "
                              "name a new or empty folder")


def _db(psnr: float) -> str:
    return "lossless" if math.isnan(psnr) else f"{psnr:.3f} dB"  # (JSON keeps an infinite PSNR as null)


def _check_reused(name: str, stored: Dict, now: Dict, store_path: Path) -> None:
    """A stored point must come out again as it was stored. The key covers the codec's settings and
    library versions but not aecodec's own code, so a change that alters its files without a new
    model or format version would otherwise leave old points in a new report. Small tolerances: the
    encoder's float arithmetic may differ between CPUs (the decoder's does not, docs/FORMAT.md)."""
    d_bytes = abs(now["bytes"] - stored["bytes"])
    # stored as JSON, a lossless point's infinite PSNR is null: compare what was stored with what would be
    was, new = _num(stored.get("psnr_rgb")), _num(_clean(now.get("psnr_rgb")))
    same_psnr = (math.isnan(was) and math.isnan(new)) or abs(new - was) <= 0.02
    if d_bytes <= max(16, 0.002 * stored["bytes"]) and same_psnr:
        return
    raise BenchError(
        f"{name}: a stored point no longer reproduces ({stored.get('image')} at quality {stored['quality']}: "
        f"{stored['bytes']} bytes, {_db(was)} stored; {now['bytes']} bytes, {_db(new)} now), so the codec "
        f"changed under the same version: "
        f"measure it afresh (move {store_path} away)")


def run_bench(cfg: BenchConfig, progress=None, log: Callable[[str], None] = lambda s: None) -> Dict:
    """Measure what is missing, then write every output. Returns a summary dict."""
    progress = progress or _no_progress
    started = time.time()
    out = Path(cfg.out)
    check_out_dir(out, Path(cfg.dataset))
    images = list_images(cfg.dataset, log)
    if not cfg.measure and not (out / "per-image").is_dir():
        raise BenchError(f"nothing is stored in {out} to report: run without --report-only")
    out.mkdir(parents=True, exist_ok=True)
    (out / "per-image").mkdir(exist_ok=True)

    usable: List[str] = []
    for name in cfg.codecs:
        why = get_codec(name).available()
        if why:
            log(f"skipping {name}: {why}")
        else:
            usable.append(name)
    # codecs measured earlier into this folder (a run done in pieces) join the report
    stored = [p.stem for p in sorted((out / "per-image").glob("*.jsonl")) if p.stem in _FACTORIES]
    report_codecs = list(usable) + [n for n in stored if n not in usable and get_codec(n).available() is None]

    stores = {n: Store(out / "per-image" / f"{n}.jsonl") for n in report_codecs}
    keys = {n: get_codec(n).key() for n in report_codecs}
    by_path = {str(im.path): im for im in images}

    # --- rate-distortion and per-image speed points
    tasks, reused = [], 0
    checks: Dict[Tuple, Dict] = {}  # one reused point per codec, measured again (see _check_reused)
    for name in sorted(usable, key=lambda n: -_COST.get(n, 1)):
        have = stores[name].index(keys[name])
        kept = []
        for im in images:
            for q in cfg.grid(name):
                if (im.sha, _qkey(q)) in have:
                    reused += 1
                    kept.append((im.width * im.height, im.name, str(im.path), q, have[(im.sha, _qkey(q))]))
                else:
                    tasks.append((name, str(im.path), q))
        if kept:  # the smallest image, at the middle of its stored levels: the cheapest telling point
            smallest = min(kept)[:2]
            at = [k for k in kept if k[:2] == smallest]
            _, _, path, q, row = at[len(at) // 2]
            checks[(name, path, q)] = row
    new = 0
    if cfg.measure and (tasks or checks):
        log(f"{len(tasks)} points to measure ({reused} reused, {len(checks)} of them measured again as a check) "
            f"on {len(images)} image{'s' * (len(images) != 1)}, {cfg.jobs} worker(s)")
        tasks = list(checks) + tasks  # checks first: a codec that changed is caught before the long part
        bar = progress(total=len(tasks), desc="points")

        def on_result(task, row):
            nonlocal new
            name = task[0]
            if "error" in row:
                raise BenchError(row["error"])
            if task in checks:
                _check_reused(name, checks.pop(task), row, stores[name].path)
                bar.update(1)
                return
            im = by_path[row.pop("path")]
            row.update(codec=name, key=keys[name], image=im.name, image_sha=im.sha, width=im.width,
                       height=im.height, jobs=cfg.jobs, threads=1, measured=_now())
            stores[name].append(row)
            new += 1
            bar.set_postfix_str(f"{name} {im.name} q={task[2]}", refresh=False)
            bar.update(1)

        try:
            _run_tasks(_task, tasks, cfg.jobs, on_result)
        finally:
            bar.close()
    elif tasks:
        if not reused:  # a report of nothing would replace the folder's report with an empty one
            raise BenchError(f"{out} holds no stored points for these images and codecs: run without "
                             "--report-only")
        log(f"{len(tasks)} points not measured (outputs from stored points only)")
    if cfg.measure:  # drop the stale points (other versions) of the codecs this run measured
        for n in usable:
            stores[n].compact(keys[n])

    # --- scaling with image size
    scaling = _scaling(cfg, images, usable, keys, progress, log, out)
    # --- cold start of the command line
    coldstart = _coldstart(cfg, images, progress, log, out)

    summary = write_outputs(cfg, images, report_codecs, stores, keys, scaling, coldstart, out, log)
    summary.update(new_points=new, reused_points=reused, seconds=time.time() - started)
    return summary


# ---------------------------------------------------------------------------
# scaling with image size (each point in a fresh process: clean peak RSS)


def scaled_image(src: np.ndarray, megapixels: float) -> np.ndarray:
    """A 3:2 image of about ``megapixels``, the source mirrored-tiled (natural statistics, no resampling)."""
    w = max(16, int(round(math.sqrt(megapixels * 1e6 * 1.5) / 16)) * 16)
    h = max(16, int(round(w / 1.5 / 16)) * 16)
    if src.shape[0] > src.shape[1]:
        src = np.ascontiguousarray(src.transpose(1, 0, 2))
    ph, pw = max(0, h - src.shape[0]), max(0, w - src.shape[1])
    while ph or pw:  # np.pad 'symmetric' reflects at most once per call
        src = np.pad(src, ((0, min(ph, src.shape[0])), (0, min(pw, src.shape[1])), (0, 0)), mode="symmetric")
        ph, pw = max(0, h - src.shape[0]), max(0, w - src.shape[1])
    return np.ascontiguousarray(src[:h, :w])


def _scaling_task(args) -> Dict:
    name, path, mp, quality = args
    try:
        codec = get_codec(name, ready=True)
        _torch_one_thread()
        rgb = scaled_image(load_rgb(path), mp)
        small = np.ascontiguousarray(rgb[:64, :64])
        codec.decode(codec.encode(codec.prepare(small), quality))  # load libraries/weights, untimed
        base = _status_kib("VmRSS")
        data, dec, enc_s, dec_s, m_enc, m_dec = _timed_roundtrip(codec, rgb, quality)
        if dec.shape != rgb.shape:
            raise BenchError(f"{name}: decoded image has the wrong shape")
        return {"codec": name, "mp": mp, "width": rgb.shape[1], "height": rgb.shape[0], "quality": quality,
                "bytes": len(data), "enc_s": enc_s, "dec_s": dec_s, "base_rss_mib": (base or 0) / 1024.0,
                "enc_peak_rss_mib": m_enc.peak_mib, "dec_peak_rss_mib": m_dec.peak_mib}
    except Exception as e:
        return {"error": f"scaling {name} at {mp} Mpx: {type(e).__name__}: {e}"}


def _scaling(cfg, images, usable, keys, progress, log, out) -> List[Dict]:
    path = out / "meta" / "scaling.jsonl"
    path.parent.mkdir(exist_ok=True)
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    src = images[0]
    names = [n for n in (cfg.scaling_codecs if cfg.scaling_codecs is not None else usable) if n in keys]
    want = []
    for n in names:
        g = get_codec(n).grid
        q = g[len(g) // 2]
        for mp in cfg.scaling_mp:
            want.append((n, str(src.path), float(mp), q))

    def ident(r):
        return (r["codec"], r["key"], r["image_sha"], _qkey(r["mp"]), _qkey(r["quality"]))

    have = {ident(r): r for r in rows if "key" in r}
    todo = [t for t in want if (t[0], keys[t[0]], src.sha, _qkey(t[2]), _qkey(t[3])) not in have]
    if cfg.measure and todo:
        log(f"scaling: {len(todo)} runs in fresh processes")
        bar = progress(total=len(todo), desc="scaling")

        def on_result(task, row):
            if "error" in row:
                raise BenchError(row["error"])
            row.update(key=keys[task[0]], image=src.name, image_sha=src.sha, jobs=cfg.jobs, measured=_now())
            have[ident(row)] = row
            with path.open("a") as f:
                f.write(json.dumps(_clean(row), sort_keys=True) + "\n")
            bar.update(1)

        try:
            # largest first; big images through a torch codec (GiBs of activations) one at a time
            _run_tasks(_scaling_task, sorted(todo, key=lambda t: -t[2] * _COST.get(t[0], 1)), cfg.jobs,
                       on_result, fresh_process=True,
                       heavy=lambda t: get_codec(t[0]).uses_torch and t[2] > HEAVY_MP)
        finally:
            bar.close()
    if cfg.measure and (have or path.exists()):  # drop the stale runs (other versions) of this run's codecs
        have = {k: r for k, r in have.items() if not (r["codec"] in usable and r["key"] != keys[r["codec"]])}
        _write_text(path, "".join(json.dumps(_clean(r), sort_keys=True) + "\n"
                                  for r in sorted(have.values(), key=lambda r: (r["codec"], r["mp"]))))
    current = [r for r in have.values() if r["codec"] in keys and r["key"] == keys[r["codec"]]
               and r["image_sha"] == src.sha]
    return sorted(current, key=lambda r: (r["codec"], r["mp"]))


# ---------------------------------------------------------------------------
# cold start of the command line, as whole processes


def time_process(cmd: List[str], runs: int = 3, env=None) -> Dict:
    """Wall time and peak RSS of a whole process (os.wait4), ``runs`` times."""
    walls, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=env)
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        walls.append(time.perf_counter() - t0)
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stderr.close()
        if p.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed (exit {p.returncode}): "
                             f"{err.decode(errors='replace').strip().splitlines()[-1:] or ''}")
        rss.append(ru.ru_maxrss / 1024.0)  # KiB on Linux
    return {"wall_s": walls, "median_s": float(np.median(walls)), "peak_rss_mib": float(max(rss))}


def _aecodec_command() -> List[str]:
    exe = Path(sys.executable).parent / "aecodec"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "aecodec.cli"]


def _coldstart(cfg, images, progress, log, out) -> Dict:
    path = out / "meta" / "coldstart.json"
    path.parent.mkdir(exist_ok=True)
    old = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
    if not (cfg.measure and cfg.coldstart):
        return old or {}
    ae = _aecodec_command()
    src = images[0]
    with tempfile.TemporaryDirectory() as td:
        aec, png = os.path.join(td, "x.aec"), os.path.join(td, "x.png")
        cmds = [
            ("python -c 'import torch' (for reference)", [sys.executable, "-c", "import torch"], False),
            ("aecodec --help", ae + ["--help"], False),
            (f"aecodec compress {src.name} (default quality)", ae + ["compress", str(src.path), "-o", aec, "-f",
                                                                      "--quiet"], True),
            ("aecodec decompress (that file) to PNG", ae + ["decompress", aec, "-o", png, "-f", "--quiet"], True),
        ]
        log(f"cold start: {len(cmds)} commands x {cfg.coldstart_runs} runs")
        bar = progress(total=len(cmds), desc="cold start")
        rows = []
        try:
            for label, cmd, _ in cmds:
                r = time_process(cmd, cfg.coldstart_runs)
                r["command"] = label
                rows.append(r)
                bar.update(1)
        finally:
            bar.close()
    res = {"measured": _now(), "runs": cfg.coldstart_runs, "image": f"{src.name} ({src.width}x{src.height})",
           "threads": "torch default (all cores)", "aecodec model": library_versions().get("aecodec model"),
           "rows": rows}
    _write_text(path, json.dumps(_clean(res), indent=2) + "\n")
    return res


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` through a temporary file and a rename: a bench
    stopped (Ctrl-C, a full disk) while writing its results leaves the previous file
    whole, never a half-written one, and no temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# aggregation and outputs


def aggregate(codec: Codec, grid: Sequence, rows: Dict, images: List[ImageItem]) -> Dict:
    """Means over the images per quality point (CompressAI convention); only complete points."""
    res = {k: [] for k in ("quality", "bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb", "encoding_time",
                           "decoding_time", "encoding_mem_mib", "decoding_mem_mib")}
    incomplete = []
    for q in grid:
        pts = [rows.get((im.sha, _qkey(q))) for im in images]
        if any(p is None for p in pts):
            incomplete.append(q)
            continue
        mean = lambda k: float(np.mean([_num(p.get(k)) for p in pts]))  # noqa: E731
        res["quality"].append(q)
        res["bpp"].append(mean("bpp"))
        res["encoding_time"].append(mean("enc_s"))
        res["decoding_time"].append(mean("dec_s"))
        res["encoding_mem_mib"].append(float(np.max([_num(p.get("enc_mem_mib")) for p in pts])))
        res["decoding_mem_mib"].append(float(np.max([_num(p.get("dec_mem_mib")) for p in pts])))
        if not codec.speed_only:
            ms = mean("ms_ssim")
            res["psnr-rgb"].append(mean("psnr_rgb"))
            res["ms-ssim-rgb"].append(ms)
            res["ms-ssim-db-rgb"].append(float(msssim_db(ms)))
    if codec.speed_only:
        for k in ("psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb"):
            del res[k]
    return {"results": res, "incomplete": incomplete}


def load_reference(path: Path) -> Optional[Dict]:
    try:
        d = json.loads(Path(path).read_text())
        r = d.get("results", d)
        out = {"name": d.get("name", Path(path).stem), "bpp": list(map(float, r["bpp"])),
               "psnr-rgb": list(map(float, r["psnr-rgb"]))}
        if "ms-ssim-rgb" in r:
            out["ms-ssim-db-rgb"] = list(map(float, msssim_db(r["ms-ssim-rgb"])))
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fmt(v, spec=".2f", none="–") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec)


def _md_table(header: List[str], rows: List[List[str]], align: Optional[str] = None) -> str:
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def bd_table(curves: Dict[str, Dict], anchors: Sequence[str], metric: str,
             references: Dict[str, Dict]) -> Tuple[str, Dict]:
    """Markdown BD-rate table of every curve against each anchor, and the numbers."""
    present = [a for a in anchors if a in curves]
    numbers: Dict[str, Dict[str, Optional[Dict]]] = {}
    rows = []
    entries = [(n, c, "measured") for n, c in curves.items()]  # here, by this or an earlier run (dates above)
    entries += [(n, c, "published (CompressAI)") for n, c in references.items()]
    for name, c, source in entries:
        cells = [name, source]
        numbers[name] = {}
        for a in present:
            if source.startswith("measured") and name == a:
                cells.append("(anchor)")
                continue
            an = curves[a]
            r, why = bd_rate_reported(an["bpp"], an[metric], c["bpp"], c.get(metric, []))
            numbers[name][a] = None if r is None else {"bd_rate": r.rate, "overlap_db": [r.lo, r.hi],
                                                       "anchor_bpp": list(r.anchor_bpp),
                                                       "test_bpp": list(r.test_bpp)}
            cells.append(f"– ({why})" if r is None else
                         f"{r.rate:+.1f} % [{r.lo:.2f}–{r.hi:.2f} dB; {r.test_bpp[0]:.2f}–{r.test_bpp[1]:.2f} bpp]")
        rows.append(cells)
    header = ["codec", "source"] + [f"vs {a}: BD-rate [overlap]" for a in present]
    if not present:
        return "(no anchor codec in this run: " + ", ".join(anchors) + ")", numbers
    return _md_table(header, rows, "ll" + "r" * len(present)), numbers


_MARKERS = "osD^v<>sphX*"
_REF_STYLES = ("--", "-.", ":", (0, (6, 2)), (0, (3, 1, 1, 1)), (0, (1, 1)))
_REF_MARKERS = "x+1234"


def plot_rd(curves: Dict[str, Dict], references: Dict[str, Dict], metric: str, ylabel: str, title: str,
            path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    cmap = plt.get_cmap("tab10")
    xmax = max([max(c["bpp"]) for c in curves.values() if c["bpp"]] + [0.5]) * 1.05
    ys = []
    for i, (name, c) in enumerate(curves.items()):
        y = c.get(metric, [])
        if not c["bpp"] or not y:
            continue
        lw = 2.6 if name == "aecodec" else 1.5
        ax.plot(c["bpp"], y, marker=_MARKERS[i % len(_MARKERS)], ms=4, lw=lw, color=cmap(i % 10), label=name,
                zorder=3 if name == "aecodec" else 2)
        ys += [v for v in y if math.isfinite(v)]
    for j, (name, c) in enumerate(references.items()):
        y = c.get(metric)
        if not y:
            continue
        pts = sorted(zip(c["bpp"], y))
        keep = [p for k, p in enumerate(pts) if p[0] <= xmax or (k > 0 and pts[k - 1][0] <= xmax)]
        if not keep:
            continue
        ax.plot([p[0] for p in keep], [p[1] for p in keep], ls=_REF_STYLES[j % len(_REF_STYLES)], lw=1.2,
                color=str(0.1 + 0.45 * (j % 3) / 2), marker=_REF_MARKERS[j % len(_REF_MARKERS)], ms=3.5,
                mfc="none", label=f"{c['name']} (published)", zorder=1)
    ax.set_xlim(0, xmax)
    if ys:
        lo, hi = min(ys), max(ys)
        pad = 0.05 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + 4 * pad)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:  # through a temporary file, as _write_text does
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


def compare_measured(name: str, rows: Dict, images: List[ImageItem], measured_dir: Optional[Path]) -> Optional[Dict]:
    """This run against the independently measured anchors, point by point (same image, same setting)."""
    if not measured_dir:
        return None
    csv_path = Path(measured_dir) / "per-image" / f"{name}.csv"
    if not csv_path.exists():
        return None
    import csv

    by_name = {im.name: im for im in images}
    n = same_bytes = 0
    d_psnr = d_ms = d_bpp = 0.0
    with csv_path.open() as f:
        for r in csv.DictReader(f):
            im = by_name.get(r["image"])
            if im is None:
                continue
            # the same name could be another picture (a crop): check the pixel count
            if abs(8 * float(r["bytes"]) / float(r["bpp"]) - im.width * im.height) > 1e-3 * im.width * im.height:
                continue
            mine = rows.get((im.sha, _qkey(r["quality"])))
            if mine is None:
                continue
            n += 1
            same_bytes += int(int(mine["bytes"]) == int(r["bytes"]))
            d_bpp = max(d_bpp, abs(mine["bpp"] - float(r["bpp"])))
            d_psnr = max(d_psnr, abs(_num(mine.get("psnr_rgb")) - float(r["psnr_rgb"])))
            d_ms = max(d_ms, abs(_num(mine.get("ms_ssim")) - float(r["ms_ssim"])))
    if not n:
        return None
    return {"points": n, "identical_bytes": same_bytes, "max_abs_bpp": d_bpp, "max_abs_psnr": d_psnr,
            "max_abs_ms_ssim": d_ms}


def _versions_list(v: Dict[str, str]) -> str:
    return "\n".join(f"- {k}: {val}" for k, val in v.items())


def write_outputs(cfg: BenchConfig, images: List[ImageItem], names: List[str], stores: Dict[str, Store],
                  keys: Dict[str, str], scaling: List[Dict], coldstart: Dict, out: Path, log=None) -> Dict:
    log = log or (lambda s: None)
    versions = library_versions()
    machine = machine_info()
    if not cfg.measure:  # a rebuilt report keeps the machine state of the run that measured
        try:
            machine = json.loads((out / "meta" / "summary.json").read_text())["machine"]
        except (OSError, ValueError, KeyError):
            pass
    date = _now()
    dataset_name = Path(cfg.dataset).resolve().name
    sizes = sorted({f"{im.width}x{im.height}" for im in images})
    total_px = sum(im.width * im.height for im in images)
    small = [im.name for im in images if min(im.width, im.height) < MSSSIM_MIN_SIDE]

    curves: Dict[str, Dict] = {}
    speed: Dict[str, Dict] = {}
    agg_all: Dict[str, Dict] = {}
    written = []
    jobs_seen, measured_span = set(), []
    for name in names:
        codec = get_codec(name)
        rows = stores[name].index(keys[name])
        grid = cfg.grid(name)
        agg = aggregate(codec, grid, rows, images)
        agg_all[name] = agg
        res = agg["results"]
        pts = [r for r in rows.values() if r["image_sha"] in {im.sha for im in images}
               and _qkey(r["quality"]) in {_qkey(q) for q in res["quality"]}]
        for r in pts:
            jobs_seen.add(r.get("jobs"))
            if r.get("measured"):
                measured_span.append(r["measured"])
        if pts:
            px = sum(r["width"] * r["height"] for r in pts)
            speed[name] = {
                "points": len(pts),
                "enc_s": float(np.mean([r["enc_s"] for r in pts])),
                "dec_s": float(np.mean([r["dec_s"] for r in pts])),
                "enc_mpx_s": px / 1e6 / max(1e-12, sum(r["enc_s"] for r in pts)),
                "dec_mpx_s": px / 1e6 / max(1e-12, sum(r["dec_s"] for r in pts)),
                "enc_mem_mib": float(np.nanmax([_num(r.get("enc_mem_mib")) for r in pts])),
                "dec_mem_mib": float(np.nanmax([_num(r.get("dec_mem_mib")) for r in pts])),
            }
        if codec.speed_only:  # in the speed table, no RD JSON
            continue
        if not res["quality"]:  # no complete point under this key: an earlier run's curve is not this codec's
            old = out / f"{name}.json"
            if old.exists() and cfg.measure and name in cfg.codecs:  # this run measured it, and found none
                old.unlink()
                log(f"removed {old}: it holds {name} points of other settings or versions, and this run has "
                    "no complete point of its own yet")
            elif old.exists():
                log(f"note: {old} is from other settings or versions of {name} (no stored point has this "
                    "machine's key); kept, as this run does not measure it")
            continue
        doc = {
            "name": name,
            "description": codec.description(),
            "meta": {
                "dataset": dataset_name, "images": len(images), "image_sizes": sizes, "date": date,
                "machine": machine, "versions": codec.versions(), "settings": codec.settings(), "key": keys[name],
                "jobs": sorted(j for j in {r.get("jobs") for r in pts} if j is not None), "threads_per_worker": 1,
                "notes": ("means over the images per quality point (CompressAI convention); bpp from the real "
                          "encoded bytes incl. container; PSNR-RGB and MS-SSIM (pytorch_msssim, data_range=255) "
                          "on the 8-bit decoded RGB image; ms-ssim-db-rgb = -10*log10(1 - mean MS-SSIM); "
                          "times in seconds (one run, wall clock, one thread); *_mem_mib = largest rise of the "
                          "worker's peak RSS during one encode/decode"),
            },
            "results": res,
        }
        p = out / f"{name}.json"
        _write_text(p, json.dumps(_clean(doc), indent=2) + "\n")
        written.append(p)
        curves[name] = res

    references: Dict[str, Dict] = {}
    if cfg.reference_dir:
        for fn in cfg.references:
            r = load_reference(Path(cfg.reference_dir) / fn)
            if r:
                references[Path(fn).stem] = r

    plots = {}
    if curves:
        head = f"{dataset_name}, {len(images)} image{'s' if len(images) != 1 else ''}"
        plots["psnr"] = out / "rd-psnr.png"
        dashed = " (dashed: CompressAI's published curves)" if references else ""
        plot_rd(curves, references, "psnr-rgb", "PSNR-RGB (dB)", f"{head}: PSNR-RGB against rate{dashed}",
                plots["psnr"])
        ms = out / "rd-msssim-db.png"
        if any(np.isfinite(np.asarray(c.get("ms-ssim-db-rgb", []), float)).any() for c in curves.values()):
            plots["msssim"] = ms
            plot_rd(curves, references, "ms-ssim-db-rgb", "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)",
                    f"{head}: MS-SSIM against rate{dashed}", ms)
        elif ms.exists():  # no image large enough for MS-SSIM: no empty plot, and no stale one
            ms.unlink()

    bd_psnr_md, bd_psnr = bd_table(curves, cfg.anchors, "psnr-rgb", references)
    bd_ms_md, bd_ms = bd_table(curves, cfg.anchors, "ms-ssim-db-rgb", references)

    agreement = {}
    for name in curves:
        c = compare_measured(name, stores[name].index(keys[name]), images, cfg.measured_dir)
        if c:
            agreement[name] = c

    summary = {
        "dataset": str(cfg.dataset), "images": len(images), "image_sizes": sizes, "date": date,
        "machine": machine, "versions": versions, "jobs": cfg.jobs, "codecs": names,
        "settings": {n: get_codec(n).settings() for n in names},
        "grids": {n: list(cfg.grid(n)) for n in names},
        "bd_rate": {"method": BD_METHOD, "psnr-rgb": bd_psnr, "ms-ssim-db": bd_ms},
        "speed": speed, "scaling": scaling, "coldstart": coldstart, "agreement_with_measured": agreement,
        "incomplete_points": {n: a["incomplete"] for n, a in agg_all.items() if a["incomplete"]},
    }
    (out / "meta").mkdir(exist_ok=True)
    _write_text(out / "meta" / "summary.json", json.dumps(_clean(summary), indent=2) + "\n")

    md = _results_markdown(cfg, images, names, curves, speed, scaling, coldstart, agreement, bd_psnr_md,
                           bd_ms_md, plots, versions, machine, date, sizes, total_px, small, jobs_seen,
                           measured_span, agg_all, references, out)
    _write_text(out / "RESULTS.md", md)
    readme = _update_readme(cfg, out, bd_psnr_md, plots, log)
    summary.update(json_files=[str(p) for p in written], plots={k: str(v) for k, v in plots.items()},
                   results_md=str(out / "RESULTS.md"), readme=str(readme) if readme else None)
    return summary


def _results_markdown(cfg, images, names, curves, speed, scaling, coldstart, agreement, bd_psnr_md, bd_ms_md,
                      plots, versions, machine, date, sizes, total_px, small, jobs_seen, measured_span, agg_all,
                      references, out) -> str:
    L: List[str] = []
    ds = Path(cfg.dataset).resolve().name
    L.append(f"# Benchmark: {ds}\n")
    L.append("Generated by `aecodec bench`; do not edit by hand (regenerate instead).\n")
    span = f"{min(measured_span)} to {max(measured_span)}" if measured_span else "–"
    L.append(_md_table(["", ""], [
        ["dataset", f"`{ds}` ({cfg.dataset}), {len(images)} image{'s' * (len(images) != 1)}, {', '.join(sizes)}, "
                    f"{total_px / 1e6:.2f} Mpx in all"],
        ["machine", f"{machine['cpu']}, {machine['cores']} cores, {machine['memory']}, {machine['os']}; "
                    f"load average at start {machine['load average at start']}"],
        ["date", f"report {date}; points measured {span}"],
        ["workers", f"{', '.join(str(j) for j in sorted(j for j in jobs_seen if j)) or cfg.jobs} worker process(es), "
                    "1 thread each (torch and every codec that exposes a thread count)"],
        ["command", f"`{cfg.command}`" if cfg.command else "–"],
    ], "ll"))
    L.append("\nVersions (read at run time):\n")
    L.append(_versions_list(versions))
    L.append("\n## Codecs and settings\n")
    for n in names:
        c = get_codec(n)
        L.append(f"- **{n}** — {c.settings()}. Versions: "
                 + ", ".join(f"{k} {v}" for k, v in c.versions().items())
                 + f". Grid: `{list(cfg.grid(n))}`. Key `{c.key()}`.")
    inc = {n: a["incomplete"] for n, a in agg_all.items() if a["incomplete"]}
    if inc:
        L.append("\n**Incomplete** (points not measured on every image, left out): "
                 + "; ".join(f"{n}: {q}" for n, q in inc.items()))
    L.append("\n## Method\n")
    L.append("Each image is encoded in memory from its 8-bit RGB pixels; bpp = 8 × (bytes of the encoded file, "
             "container and headers included) / (W × H); the bytes are decoded back to 8-bit RGB. PSNR-RGB = "
             "10 log10(255² / MSE), MSE over the three channels. MS-SSIM: `pytorch_msssim.ms_ssim(data_range=255)` "
             "(5 scales, 11×11 Gaussian window) on the uint8 values; MS-SSIM dB = −10 log10(1 − MS-SSIM) of the "
             "mean MS-SSIM. Each point is the mean over the images at one setting (CompressAI convention). "
             "Times: wall clock of one encode and one decode call, in memory, one thread. "
             f"BD-rates: Bjøntegaard delta rate with **{BD_METHOD}** interpolation of log-rate against quality, "
             "integrated over the overlap of the two curves' quality ranges (shown in brackets with the test "
             "codec's bpp over that overlap); nothing extrapolated, and no BD-rate from a curve of fewer "
             f"than {MIN_POINTS} points (a short sweep with fewer gets none).")
    if small:
        L.append(f"\nMS-SSIM is not computed for {len(small)} image(s) with a side under {MSSSIM_MIN_SIDE} px "
                 "(the 5-scale pyramid does not fit): MS-SSIM columns show – for them.")
    if plots:
        L.append("\n## Rate-distortion\n")
        for k in ("psnr", "msssim"):
            if k in plots:
                L.append(f"![{k}]({os.path.relpath(plots[k], out)})\n")
        L.append("Dashed: CompressAI's published Kodak curves (" + ", ".join(r["name"] for r in references.values())
                 + "), for reference; they were not measured here.\n" if references else "")
    L.append("\n### BD-rate, PSNR-RGB\n")
    L.append(f"{BD_METHOD}; negative = fewer bits than the anchor for the same PSNR.\n")
    L.append(bd_psnr_md)
    L.append("\n### BD-rate, MS-SSIM (dB)\n")
    L.append(f"{BD_METHOD}; negative = fewer bits than the anchor for the same MS-SSIM.\n")
    L.append(bd_ms_md)
    L.append("\n### Points (means over the images)\n")
    for n, c in curves.items():
        rows = [[_fmt(q, "g"), _fmt(b, ".4f"), _fmt(p, ".2f"), _fmt(m, ".4f"), _fmt(md, ".2f"), _fmt(e, ".3f"),
                 _fmt(d, ".3f")]
                for q, b, p, m, md, e, d in zip(c["quality"], c["bpp"], c["psnr-rgb"], c["ms-ssim-rgb"],
                                                c["ms-ssim-db-rgb"], c["encoding_time"], c["decoding_time"])]
        L.append(f"\n<details><summary>{n}</summary>\n")
        L.append(_md_table(["quality", "bpp", "PSNR-RGB", "MS-SSIM", "MS-SSIM dB", "enc s", "dec s"], rows))
        L.append("\n</details>")
    if agreement:
        L.append("\n### Agreement with the independently measured anchors\n")
        L.append(f"Same image, same setting, compared point by point with "
                 f"`{os.path.relpath(cfg.measured_dir)}`.\n")
        L.append(_md_table(["codec", "points", "identical bytes", "max abs Δbpp", "max abs ΔPSNR dB", "max abs ΔMS-SSIM"],
                           [[n, str(a["points"]), str(a["identical_bytes"]), _fmt(a["max_abs_bpp"], ".2g"),
                             _fmt(a["max_abs_psnr"], ".2g"), _fmt(a["max_abs_ms_ssim"], ".2g")]
                            for n, a in agreement.items()]))
    L.append("\n## Speed\n")
    L.append("Per image, averaged over every image and quality point of each codec; one thread per worker, "
             f"{cfg.jobs} worker(s) side by side. Memory: the largest rise of the worker's peak RSS during one "
             "encode / decode (over the RSS just before it)."
             + (" msh-random is compressai's MeanScaleHyperprior(128, 192) with random weights (the size of "
                "aecodec's default model), run on the same images on the same machine (dates above); its rate and quality mean "
                "nothing." if "msh-random" in speed else "") + "\n")
    L.append(_md_table(["codec", "points", "encode s/image", "decode s/image", "encode Mpx/s", "decode Mpx/s",
                        "encode +MiB", "decode +MiB"],
                       [[n, str(s["points"]), _fmt(s["enc_s"], ".3f"), _fmt(s["dec_s"], ".3f"),
                         _fmt(s["enc_mpx_s"], ".2f"), _fmt(s["dec_mpx_s"], ".2f"), _fmt(s["enc_mem_mib"], ".0f"),
                         _fmt(s["dec_mem_mib"], ".0f")] for n, s in speed.items()]))
    if scaling:
        L.append("\n### Against image size\n")
        L.append(f"The first image, mirror-tiled to 3:2 images of each size; each codec at the middle of its "
                 f"grid; every run in a fresh process (one thread) so that the peak RSS is its own: "
                 f"process peak RSS during the encode / decode, and the RSS before them (libraries and "
                 f"weights loaded).\n")
        L.append(_md_table(["codec", "Mpx", "size", "quality", "encode s", "decode s", "encode Mpx/s",
                            "decode Mpx/s", "RSS before MiB", "peak RSS encode MiB", "peak RSS decode MiB"],
                           [[r["codec"], _fmt(r["width"] * r["height"] / 1e6, ".2f"), f"{r['width']}x{r['height']}",
                             _fmt(r["quality"], "g"), _fmt(r["enc_s"], ".3f"), _fmt(r["dec_s"], ".3f"),
                             _fmt(r["width"] * r["height"] / 1e6 / r["enc_s"], ".2f"),
                             _fmt(r["width"] * r["height"] / 1e6 / r["dec_s"], ".2f"),
                             _fmt(r.get("base_rss_mib"), ".0f"), _fmt(r.get("enc_peak_rss_mib"), ".0f"),
                             _fmt(r.get("dec_peak_rss_mib"), ".0f")] for r in scaling]))
    if coldstart and coldstart.get("rows"):
        L.append("\n### Cold start of the command line\n")
        L.append(f"Whole processes, {coldstart['runs']} runs each, measured {coldstart['measured']} on "
                 f"{coldstart['image']}; torch with its default thread count. Peak RSS from the process's "
                 f"resource usage.\n")
        L.append(_md_table(["command", "median s", "min–max s", "peak RSS MiB"],
                           [[r["command"], _fmt(r["median_s"], ".2f"),
                             f"{min(r['wall_s']):.2f}–{max(r['wall_s']):.2f}", _fmt(r["peak_rss_mib"], ".0f")]
                            for r in coldstart["rows"]]))
    L.append("\n## Files\n")
    pngs = ", ".join(f"`{os.path.relpath(p, out)}`" for p in plots.values())
    meta = [f"`meta/{f}`: {what}" for f, what, there in (("scaling.jsonl", "speed against image size", scaling),
                                                         ("coldstart.json", "cold start", coldstart)) if there]
    L.append("- `<codec>.json`: CompressAI-format results (means per quality point), readable by "
             "`python -m compressai.utils.plot`\n- `per-image/<codec>.jsonl`: every point on every image (also "
             "the cache a later run resumes from)\n" + (f"- {pngs}: the plots\n" if pngs else "")
             + "".join(f"- {m}\n" for m in meta)
             + "- `meta/summary.json`: everything above, machine-readable")
    return "\n".join(L) + "\n"


def _update_readme(cfg: BenchConfig, out: Path, bd_psnr_md: str, plots: Dict, log=None) -> Optional[Path]:
    """Replace the section between the bench-results markers of a README, if it has them.

    A README named with ``--readme`` is always refreshed.  The default one (OUT/../README.md)
    only when its section links no other folder's RESULTS.md: a quick run into another
    folder beside the published results must not replace them."""
    path = cfg.readme
    explicit = path is not None
    if path is None:
        cand = out.parent / "README.md"
        path = cand if cand.exists() else None
    if path is None or not Path(path).exists():
        return None
    text = Path(path).read_text()
    if README_START not in text or README_END not in text:
        return None
    base = Path(path).parent
    rel = lambda p: os.path.relpath(p, base)  # noqa: E731
    section = text[text.index(README_START) + len(README_START):text.index(README_END)]
    if not explicit and "RESULTS.md" in section and f"({rel(out / 'RESULTS.md')})" not in section:
        if log:
            log(f"{path} shows the results of another folder; left as it is (--readme {path} replaces them)")
        return None
    ds = Path(cfg.dataset).resolve().name
    body = [f"Latest results on `{ds}` (full tables, speed and versions: "
            f"[{rel(out / 'RESULTS.md')}]({rel(out / 'RESULTS.md')})).\n"]
    for k in ("psnr", "msssim"):
        if k in plots:
            body.append(f"![{k}]({rel(plots[k])})\n")
    body.append(f"BD-rate, PSNR-RGB ({BD_METHOD}):\n")
    body.append(bd_psnr_md)
    start = text.index(README_START) + len(README_START)
    end = text.index(README_END)
    _write_text(Path(path), text[:start] + "\n" + "\n".join(body) + "\n" + text[end:])
    return Path(path)


def draw_heatmap(aec_bytes: bytes, out_png_path) -> Dict:
    """The bits spent per region of an .aec file, beside the decoded image (see aecodec.heatmap)."""
    from .heatmap import draw_heatmap as _draw

    return _draw(aec_bytes, out_png_path)
