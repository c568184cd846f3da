"""Training: resumable, checkpointed rate-distortion training of the variable-rate model.

    aecodec train DATA_DIR [--run-dir DIR] [--minutes M] [--steps S] ...
    (or: python -m aecodec.train ...)

All quality levels are trained together: every crop in a batch draws a random
level and is weighted by that level's lambda.  Checkpoints (model, optimisers,
scheduler, RNG states) are written atomically every few minutes to the run
directory (default ``~/.cache/aecodec/runs/main``); a run started again with the
same directory resumes exactly where it stopped.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def tune_malloc() -> None:
    """glibc malloc makes conv training 2-3x slower here (see shared/GUIDE.md)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX = 0
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD = 1 GiB
    except OSError:
        pass


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm"}


def list_images(root: Path) -> List[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def split_files(files: List[Path], val_count: int) -> tuple:
    """Deterministic held-out split by a hash of the file name (stable as the folder grows)."""
    keyed = sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    return keyed[val_count:], keyed[:val_count]


def training_split(data, val_images: int, keep: Optional[List[str]] = None) -> tuple:
    """(training files, held-out files) of a data folder: ``val_images`` held out, at
    most one in 20.  One rule for training and for --pack-to, so a pack never holds a
    held-out image.  ``keep``: a resumed run's held-out files (paths relative to ``data``):
    they stay held out and images added since go to training, so no validation image is
    ever trained on (the hash rule alone would move the split as the folder grows)."""
    if not Path(data).is_dir():
        raise SystemExit(f"error: {data}: {'a file, not a folder' if Path(data).exists() else 'no such directory'}")
    files, small = [], []
    for p in list_images(Path(data)):
        (files if _min_side(p) >= MIN_SIDE else small).append(p)
    if small:
        print(f"note: {len(small)} image(s) in {data} under {MIN_SIDE} pixels on a side (or unreadable) left out, "
              f"e.g. {small[0].name}", file=sys.stderr)
    if len(files) < 2:
        raise SystemExit(f"error: need at least 2 images of at least {MIN_SIDE}x{MIN_SIDE} pixels in {data}, "
                         f"found {len(files)}")
    train, held_out = split_files(files, min(val_images, max(1, len(files) // 20)))
    if keep:
        wanted = set(keep)
        order = split_files(files, 0)[0]  # the order split_files gives: the crops depend on it
        held = [p for p in order if relative_name(p, data) in wanted]
        gone = sorted(wanted - {relative_name(p, data) for p in held})
        # never trained on: the run's held-out images, and those the hash rule holds out now
        # (what tools/heldout.py and --pack-to hold out, so that they never see a trained image)
        kept_train = [p for p in train if p not in held]
        if held and kept_train:
            if gone:
                print(f"note: {len(gone)} of the run's {len(wanted)} held-out image(s) are no longer in {data} "
                      f"(e.g. {gone[0]}): validating on the {len(held)} left", file=sys.stderr)
            spare = [p for p in held_out if p not in held]
            if spare:
                print(f"note: {len(spare)} image(s) added since the run began are held out by the hash rule "
                      f"(as tools/heldout.py and --pack-to hold them out): not trained on, not validated "
                      f"(e.g. {relative_name(spare[0], data)})", file=sys.stderr)
            return kept_train, held
        print(f"note: {'none of the run' if not held else 'only the run'}'s held-out images "
              f"{'is' if not held else 'are'} left in {data}: a new held-out split", file=sys.stderr)
    return train, held_out


def relative_name(path: Path, data) -> str:
    """How a checkpoint names an image of the data folder: its path inside the folder."""
    try:
        return Path(path).relative_to(Path(data)).as_posix()
    except ValueError:
        return Path(path).name


def read_checkpoint(path: Path, resumed: bool = False) -> Dict:
    """A training checkpoint (last.pt, best.pt), or a one-line error (SystemExit) that says
    what the file is not and, for the run directory's own (``resumed``), the way out."""
    import torch

    try:  # tensors and plain Python values only: unpickling anything else could run its code
        st = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(st, dict) and "model" in st and "config" in st
    except Exception as e:  # a damaged zip, text, a pickle of something else: torch says it many ways
        ok, why = False, unpickle_problem(e)
    else:
        why = "not a training checkpoint of aecodec train"
    if ok:
        return st
    if resumed:
        raise SystemExit(f"error: {path} cannot be resumed ({why}): start over with --fresh (the file is then "
                         "moved aside), or put back a good copy")
    raise SystemExit(f"error: --init {path}: not release weights (.safetensors) or a training checkpoint ({why})")


def unpickle_problem(e: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in a short phrase."""
    why = " ".join(str(e).split()) or type(e).__name__
    if "Weights only load failed" in why:  # torch's long advice to load it unsafely: not what we do
        return "it holds Python objects besides tensors and plain values, which aecodec does not unpickle"
    return why if len(why) <= 120 else why[:119].rstrip() + "…"


MIN_SIDE = 64  # the model's downsampling: a smaller image gives no crop to train or validate on


def _min_side(path: Path) -> int:
    """The shorter side from the image's header (0 when Pillow cannot read it)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return min(im.size)
    except Image.DecompressionBombError:  # huge: Pillow's own limit, which open_image lifts
        return 1 << 30
    except Exception:
        return 0


def load_rgb(path: Path) -> np.ndarray:
    """The image as 8-bit RGB, read as ``aecodec compress`` reads it (EXIF orientation applied;
    16-bit samples reduced to the nearest 8-bit level rather than clipped; CMYK through its
    profile); its alpha, if any, left out."""
    from .image import open_image

    return open_image(path).rgb


class CropSampler:
    """Random crops and flips from images held in memory (uint8)."""

    kind = "host"

    def __init__(self, images: List[np.ndarray], crop: int, seed: int):
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop}x{crop}")
        self.crop = crop
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.p = areas / areas.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int, device=None):
        """n crops as an (n, 3, crop, crop) float tensor in [0, 1] on ``device``
        (moved as uint8, a quarter of the bytes, and converted there)."""
        import torch

        c = self.crop
        out = np.empty((n, c, c, 3), dtype=np.uint8)
        for i in range(n):
            im = self.images[self.rng.choice(len(self.images), p=self.p)]
            h, w = im.shape[:2]
            top = self.rng.integers(0, h - c + 1)
            left = self.rng.integers(0, w - c + 1)
            patch = im[top:top + c, left:left + c]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        t = torch.from_numpy(out)
        if device is not None:
            t = t.to(device, non_blocking=True)
        return t.permute(0, 3, 1, 2).float().div_(255.0)

    def levels(self, n: int, count: int):
        """n random level indexes (from torch's global generator, as before the device sampler)."""
        import torch

        return torch.randint(0, count, (n,))

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, s):
        self.rng.bit_generator.state = s


class DeviceCropSampler:
    """The same random crops and flips as :class:`CropSampler`, drawn where the model
    trains: the images live there as one flat uint8 tensor, offsets, flips and levels come
    from a ``torch.Generator`` there, and a batch is one gather.  The host does no per-crop
    work and copies nothing per step, so a GPU step is not held up by the sampler (about
    9 ms of host time per 16 crops of 256², more than linearly more for larger batches, on
    these CPUs).  Its stream of crops differs from :class:`CropSampler`'s; it is as
    deterministic and is resumed exactly from its checkpointed generator state."""

    kind = "device"

    def __init__(self, images: List[np.ndarray], crop: int, seed: int, device):
        import torch

        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop}x{crop}")
        self.crop = crop
        self.device = torch.device(device)
        dev = self.device
        hw = torch.tensor([im.shape[:2] for im in self.images], dtype=torch.long)
        areas = (hw[:, 0] * hw[:, 1]).to(torch.float64)
        self.h, self.w = hw[:, 0].to(dev), hw[:, 1].to(dev)
        self.offset = torch.cat([torch.zeros(1, dtype=torch.long), areas.long().cumsum(0)[:-1]]).to(dev)
        self.cdf = (areas.cumsum(0) / areas.sum()).to(torch.float32).to(dev)
        self.pixels = torch.cat([torch.from_numpy(im.reshape(-1, 3)) for im in self.images]).to(dev)
        self.ar = torch.arange(crop, device=dev)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(int(seed))

    def batch(self, n: int, device=None):
        """n crops as an (n, 3, crop, crop) float tensor in [0, 1] on the sampler's device."""
        import torch

        c, dev, ar = self.crop, self.device, self.ar
        u = torch.rand((n, 5), generator=self.gen, device=dev)
        idx = torch.searchsorted(self.cdf, u[:, 0].contiguous(), right=True).clamp_max(self.cdf.numel() - 1)
        h, w = self.h[idx], self.w[idx]
        top = (u[:, 1] * (h - c + 1)).long().clamp_max(h - c)
        left = (u[:, 2] * (w - c + 1)).long().clamp_max(w - c)
        rows = top[:, None] + torch.where(u[:, 3:4] < 0.5, c - 1 - ar, ar)  # vertical flip
        cols = left[:, None] + torch.where(u[:, 4:5] < 0.5, c - 1 - ar, ar)  # horizontal flip
        pos = self.offset[idx][:, None, None] + rows[:, :, None] * w[:, None, None] + cols[:, None, :]
        return self.pixels[pos].permute(0, 3, 1, 2).float().div_(255.0)

    def levels(self, n: int, count: int):
        import torch

        return torch.randint(0, count, (n,), generator=self.gen, device=self.device)

    def state(self):
        return {"kind": self.kind, "generator": self.gen.get_state()}

    def set_state(self, s):
        if not (isinstance(s, dict) and s.get("kind") == self.kind):
            raise ValueError("the checkpoint's crop sampler is of another kind")
        self.gen.set_state(s["generator"])


def pack_training_images(data: Path, out: Path, val_images: int, quality: int = 95) -> Dict:
    """Write the training split of ``data`` (never its held-out images) as JPEG
    (4:4:4, ``quality``) into ``out``: a compact copy for a machine the folder must
    travel to (e.g. a lent GPU with a size limit on what travels)."""
    from PIL import Image

    train_files, _ = training_split(data, val_images)
    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    total, written, bad = 0, 0, []
    for p, name in zip(train_files, pack_names(train_files, data)):
        try:
            rgb = load_rgb(p)
        except Exception as e:  # a damaged file among many: left out and said, as training does
            bad.append((p, e))
            continue
        dst = out / name
        tmp = dst.with_name(dst.name + ".tmp")
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality, subsampling=0)
        os.replace(tmp, dst)
        total += dst.stat().st_size
        written += 1
    say_undecodable(bad, data, "image(s) could not be decoded and were left out of the pack")
    if not written:
        if made:
            out.rmdir()
        raise SystemExit(f"error: no training image of {data} could be decoded: nothing packed")
    return {"images": written, "bytes": total}


def say_undecodable(bad: List[tuple], data, what: str) -> None:
    """One note for the (path, error) pairs of images that did not decode, naming the first."""
    if bad:
        p, e = bad[0]
        print(f"note: {len(bad)} {what}, e.g. {relative_name(p, data)} ({' '.join(str(e).split())[:100]})",
              file=sys.stderr)


def pack_names(files: List[Path], data) -> List[str]:
    """The pack's file names: each image's stem + .jpg, and where two images share a stem
    (same name in two subfolders, or a.png beside a.jpg) their path inside the folder, with
    the folders joined by '_' (and a number if even that repeats), so none overwrites another."""
    from collections import Counter

    stems = [p.stem for p in files]
    count = Counter(stems)
    names, taken = [], set()
    for p, stem in zip(files, stems):
        if count[stem] > 1:
            rel = Path(relative_name(p, data))
            stem = "_".join([*rel.parent.parts, rel.stem]) + ("" if rel.suffix.lower() in (".jpg", ".jpeg")
                                                              else "_" + rel.suffix.lower().lstrip("."))
        name, k = stem + ".jpg", 1
        while name.lower() in taken:
            k += 1
            name = f"{stem}-{k}.jpg"
        taken.add(name.lower())
        names.append(name)
    return names


DEFAULT_LR = 3e-4
DEFAULT_DECAY_STEPS = 20000


def lr_at(step: int, base_lr: float, warmup: int, decay_start: Optional[int], decay_steps: int,
          final_frac: float = 0.05, warmup_from: int = 0) -> float:
    """Linear warm-up from ``warmup_from``, constant, then (once decay_start is set)
    cosine decay to final_frac.  ``warmup_from`` is the step of the last --rewarm."""
    if 0 <= step - warmup_from < warmup:
        return base_lr * (step - warmup_from + 1) / warmup
    if decay_start is None or step < decay_start:
        return base_lr
    t = min(1.0, (step - decay_start) / max(1, decay_steps))
    return base_lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def plan_timed_decay(steps: int, seconds: float, seconds_left: float, margin: float = 0.97) -> int:
    """Length in steps of a cosine decay that fills ``seconds_left`` of wall time at the rate
    measured so far (``steps`` in ``seconds``, checkpoints and validations included), with a
    small margin so that it ends before the deadline; 1 step/s when nothing was measured."""
    rate = steps / seconds if steps > 0 and seconds > 0 else 1.0
    return max(1, int(rate * max(0.0, seconds_left) * margin))


def loss_spike(loss: float, recent: List[float], factor: float = 2.0, min_history: int = 8) -> Optional[float]:
    """The median of ``recent`` logged losses when ``loss`` is more than ``factor`` times it (or
    not finite): a spike worth a line in the output; None otherwise or without enough history."""
    if len(recent) < min_history:
        return None
    med = float(np.median(recent))
    return med if (not math.isfinite(loss) or loss > factor * med) else None


class EMA:
    """Exponential moving average of a model's weights (what gets validated and exported).

    Training with a constant learning rate leaves the weights oscillating around
    a better point; their running average is that point, for free.  The decay
    warms up as min(decay, (1 + n) / (10 + n)) so a fresh average is not
    dominated by its starting weights.
    """

    def __init__(self, model, decay: float):
        import copy

        self.decay = float(decay)
        self.n = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._bound = False  # bound to the live model's tensors at the first update

    def _bind(self, model):
        live = list(model.state_dict().values())
        mine = list(self.model.state_dict().values())
        if len(live) != len(mine):
            raise ValueError("EMA and model have different state layouts")
        # floating tensors of equal shape are averaged in one fused call; the rest
        # (step counters, CDF buffers of another size) are copied or left alone
        self._float = ([], [])
        self._other = []
        for m, v in zip(mine, live):
            if m.dtype.is_floating_point and m.shape == v.shape:
                self._float[0].append(m)
                self._float[1].append(v)
            else:
                self._other.append((m, v))
        self._bound = True

    def update(self, model) -> None:
        import torch

        if not self._bound:
            self._bind(model)
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        with torch.no_grad():
            if self._float[0]:
                torch._foreach_lerp_(self._float[0], self._float[1], 1.0 - d)
            for m, v in self._other:
                if m.shape != v.shape:  # e.g. CDF buffers, only rebuilt at export
                    continue
                m.copy_(v)

    def state_dict(self) -> Dict:
        return {"model": self.model.state_dict(), "n": self.n, "decay": self.decay}

    def load_state_dict(self, st: Dict) -> None:
        self.model.load_state_dict(st["model"])
        self.n = int(st["n"])
        self._bound = False


def resolve_device(name: str):
    """torch.device for --device: 'auto' is the first CUDA GPU when there is one, else the CPU."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"error: --device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: this torch ({torch.__version__}) sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {name}: only cpu and cuda are supported")
    return dev


def parse_lambdas(spec: str) -> List[float]:
    """The values of --lambdas; ValueError unless they are positive and strictly increasing."""
    try:
        vals = [float(v) for v in spec.split(",")]
    except ValueError:
        vals = []
    if not vals or any(not (v > 0 and math.isfinite(v)) for v in vals) or any(
            b <= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"--lambdas takes increasing positive values like 0.0018,0.0035, got {spec!r}")
    return vals


def map_levels(src: List[float], dst: List[float]) -> List[tuple]:
    """For each new level, (the trained level to start from, log-gain offset): the same lambda
    when it was trained (offset 0), else the nearest one in log-lambda, its gains moved by
    0.5 * log(lambda_new / lambda_old) (the quantiser step goes as 1/sqrt(lambda) at high rate,
    the rule the model's own initial gains follow)."""
    out = []
    for lam in dst:
        j = min(range(len(src)), key=lambda i: abs(math.log(lam / src[i])))
        out.append((j, 0.5 * math.log(lam / src[j])))
    return out


def describe_device(device, threads: int) -> str:
    """The machine a run trains on, as the key of the weights' training record (the keys the
    releases use: ``cpu_2_cores``, ``gpu_h100``)."""
    import torch

    if device.type == "cuda":
        words = torch.cuda.get_device_name(device).replace("NVIDIA", "").split()
        return "gpu_" + (words[0].lower() if words else "unknown")
    return f"cpu_{os.cpu_count() or threads}_cores"


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # an error or an abort mid-write: the previous file stays, no stray .tmp
        tmp.unlink(missing_ok=True)
        raise


def crop_problem(side: int) -> Optional[str]:
    """Why ``side`` cannot be a crop side (training, validation, tools/heldout.py), or None."""
    if side < 64 or side % 64:
        return f"must be a multiple of 64 (the model's downsampling), got {side}"
    return None


def started_from(last: Path, init, state: Optional[Dict] = None) -> bool:
    """Whether the run whose checkpoint is ``last`` (``state``, when already loaded) was
    warm-started from the weights file ``init`` (same model id): rerunning the command that
    started it then simply resumes it."""
    import torch

    from .weights import header_metadata

    mid = (header_metadata(init) or {}).get("model_id") if str(init).endswith(".safetensors") else None
    if not mid:
        return False
    if state is None:
        try:
            state = torch.load(last, map_location="cpu", weights_only=True)
        except Exception:
            return False
    return isinstance(state, dict) and (state.get("parent") or {}).get("model_id") == mid


def init_conflict(args, state: Optional[Dict] = None) -> Optional[str]:
    """Why --init cannot be used as given (a checkpoint in --run-dir would be resumed, and it
    did not start from these weights), or None.  ``state``: that checkpoint, when loaded."""
    last = Path(args.run_dir).expanduser() / "last.pt"
    if getattr(args, "init", None) and not getattr(args, "fresh", False) and last.exists():
        if started_from(last, args.init, state):  # the same command run again: resume (--init is already in it)
            return None
        return (f"{last} would be resumed and --init ignored: add --fresh to start over from {args.init} "
                "(that run's files are then moved into a replaced-DATE folder), or leave out --init to resume")
    return None


# What --clip bounds, recorded in each checkpoint: "main" = the main optimiser's parameters only.
# Before session 11 it was every parameter, the quantiles' stale auxiliary gradient included
# (see Trainer._rescale_old_moments).
CLIP_SCOPE = "main"
# Adam's epsilon for the main parameters.  Until session 11 every main gradient reached Adam
# divided by the ~840 norm of the aux gradient (see CLIP_SCOPE), so torch's default 1e-8 acted
# as ~8.4e-6 on the real gradients for the whole lineage of the shipped weights (a step from a
# checkpoint measured with 8.4e-6 matched the old code's to 4 digits).  1e-5 keeps that.
ADAM_EPS = 1e-5
OLD_CLIP = 1.0  # --clip's default before session 11 (the checkpoints of then did not record it:
# an old run made with another --clip is rescaled as if it had used 1.0)
DEFAULT_CLIP = 50.0
RUN_FILES = ("last.pt", "best.pt", "decay-start.pt", "log.jsonl", "curves.png")
DEFAULT_CROP = 256
DEFAULT_BATCH = 4
DEFAULT_WARMUP = 200
DEFAULT_VAL_IMAGES = 8
DEFAULT_VAL_CROP = 256
DEFAULT_ARCH = "gained-mean-scale-hyperprior"
DEFAULT_N, DEFAULT_M = 128, 192
# kept in the checkpoint: a resumed run takes the checkpoint's unless the option is given
KEPT = (("crop", DEFAULT_CROP), ("batch", DEFAULT_BATCH), ("warmup", DEFAULT_WARMUP),
        ("val_images", DEFAULT_VAL_IMAGES), ("val_crop", DEFAULT_VAL_CROP))


class RunConflict(SystemExit):
    """Options that contradict the run in --run-dir (a usage error: exit status 2)."""


def keep_run_shape(args, state: Optional[Dict] = None) -> None:
    """Options not given: a resumed run keeps its checkpoint's (as it keeps --lr), a new one takes
    the defaults. --crop, --batch, --warmup, --val-images, --val-crop given and different from
    the run's: said, since the run then goes on from its checkpoint but no longer as one
    uninterrupted run would (another --val-images also moves the held-out split). The model's
    --arch, --N, --M cannot differ from the checkpoint's: an error, before the images load."""
    cfg = (state or {}).get("config") or {}
    for name, default in (("arch", DEFAULT_ARCH), ("N", DEFAULT_N), ("M", DEFAULT_M)):
        had, given = cfg.get(name), getattr(args, name, None)
        if name == "arch" and state is not None and had is None:
            had = DEFAULT_ARCH  # checkpoints from before the linear twin
        if given is None:
            setattr(args, name, had if had is not None else default)
        elif had is not None and given != had:
            raise RunConflict(f"error: the run in {args.run_dir} is {cfg.get('arch', DEFAULT_ARCH)} N={cfg.get('N')} "
                             f"M={cfg.get('M')}, not --{name} {given}: leave out --arch/--N/--M to resume it, or add "
                             "--fresh (or use another --run-dir) to start a new model")
    for name, default in KEPT:
        had, given = cfg.get(name), getattr(args, name, None)  # (a kept --warmup may be 0)
        if given is None:
            setattr(args, name, int(had) if had is not None else default)
        elif had is not None and int(had) != given:
            print(f"note: --{name.replace('_', '-')} {given}, where the run had {had}: it goes on from its "
                  "checkpoint with the new value", file=sys.stderr)


def set_aside_run(run_dir: Path) -> Optional[Path]:
    """--fresh: move an earlier run's files (checkpoints, log, plot) into a new folder
    ``replaced-YYYYmmdd-HHMMSS`` inside ``run_dir`` rather than overwrite them, so that
    starting over never destroys a trained run (and the new log does not continue the old
    one).  Returns that folder, or None when there was nothing to move."""
    have = [run_dir / n for n in RUN_FILES if (run_dir / n).exists()]
    if not have:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = run_dir / f"replaced-{stamp}"
    k = 1
    while dest.exists():
        k += 1
        dest = run_dir / f"replaced-{stamp}-{k}"
    dest.mkdir()
    for f in have:
        os.replace(f, dest / f.name)
    print(f"--fresh: the earlier run's files in {run_dir} ({', '.join(f.name for f in have)}) were moved to "
          f"{dest}", file=sys.stderr)
    return dest


class Trainer:
    def __init__(self, args):
        import torch

        from .model import ARCHITECTURES

        self.args = args
        self.run_dir = Path(args.run_dir).expanduser()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        ckpt = self.run_dir / "last.pt"
        resume = read_checkpoint(ckpt, resumed=True) if ckpt.exists() and not args.fresh else None
        had = (resume or {}).get("config") or {}
        keep_run_shape(args, resume)  # before the images load: the crop decides which are usable

        # a resumed run keeps its held-out images (unless --val-images changes their number)
        keep = had.get("val_files") if int(had.get("val_images", -1)) == args.val_images else None
        train_files, val_files = training_split(args.data, args.val_images, keep=keep)
        t0 = time.time()
        train_files, train_imgs = self._load_images(train_files, "training")
        val_files, self.val_imgs = self._load_images(val_files, "held-out")
        if not self.val_imgs:
            raise SystemExit(f"error: no held-out image of {args.data} could be decoded; use --val-images to hold "
                             "out more, or replace the damaged files")
        self.train_files, self.val_files = train_files, val_files
        self.val_names = [relative_name(p, args.data) for p in val_files]
        print(f"loaded {len(train_imgs)} training / {len(self.val_imgs)} validation images "
              f"in {time.time() - t0:.1f}s", file=sys.stderr)
        small = [p for p, im in zip(train_files, train_imgs) if min(im.shape[:2]) < args.crop]
        if small and len(small) < len(train_imgs):
            print(f"note: {len(small)} training image(s) smaller than the {args.crop}-pixel crop are not used, "
                  f"e.g. {relative_name(small[0], args.data)}", file=sys.stderr)
        elif small:
            side = max(min(im.shape[:2]) for im in train_imgs) // 64 * 64
            raise SystemExit(f"error: no training image is at least {args.crop}x{args.crop} pixels (the largest "
                             f"crop they allow: --crop {side})")
        # validation measured otherwise than the run's best.pt was: that best is not a bar to beat
        self._new_validation = resume is not None and (
            (had.get("val_files") is not None and sorted(had["val_files"]) != sorted(self.val_names))
            or int(had.get("val_crop", args.val_crop)) != args.val_crop
            or int(had.get("val_images", args.val_images)) != args.val_images)
        self.device = resolve_device(args.device)
        if self.device.type == "cuda":  # TF32 convolutions and products: ~2x, noise far below the rate term
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.sampler = self._make_sampler(train_imgs, args.seed)
        conflict = init_conflict(args, resume)
        if conflict:
            raise RunConflict(f"error: {conflict}")
        self._fresh_pending = bool(args.fresh)  # an earlier run's files: set aside at this run's first write
        self._set_aside_to = None
        try:
            lambdas = parse_lambdas(args.lambdas) if args.lambdas else None
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        if resume is not None:
            had = resume["config"].get("lambdas")
            if lambdas is None:
                lambdas = had
            elif had is not None and (len(lambdas) != len(had) or not np.allclose(lambdas, had, rtol=1e-9, atol=0)):
                raise RunConflict(f"error: checkpoint {ckpt} trains the levels {had}, asked for {lambdas}; "
                                 "start a new --run-dir with --init to add or change levels")
        self.model = ARCHITECTURES[args.arch](N=args.N, M=args.M, **({"lambdas": lambdas} if lambdas else {}))
        self.model.to(self.device)
        if args.amp == "bf16":  # the transforms' convolutions in bfloat16 (GDN, entropy models, loss: float32)
            self.model.transform_dtype = torch.bfloat16
        self.lambdas = torch.tensor(self.model.lambdas, device=self.device)
        self._rd = self._rd_forward
        self._compile_unproven = bool(args.compile)  # until a compiled step has run
        if args.compile:  # the training forward pass and loss through torch.compile (inductor)
            import torch._inductor.config as inductor_config

            # random ops (the latents' noise) draw from torch's generator as in eager mode, so a
            # resumed compiled run draws the same noise (the generator state is in the checkpoint)
            # and continues to float rounding (two compilations' sums may differ by ~1e-9)
            inductor_config.fallback_random = True
            # static shapes: a batch change (--probe-batches) compiles again for the new shape
            # rather than switching to slower shape-generic kernels
            self._rd = torch.compile(self._rd_forward, dynamic=False)
        params = [p for n, p in self.model.named_parameters() if not n.endswith(".quantiles")]
        aux = [p for n, p in self.model.named_parameters() if n.endswith(".quantiles")]
        self.base_lr = args.lr if args.lr is not None else DEFAULT_LR
        # on a GPU, fused Adam: one kernel per step instead of a few per parameter group
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt = torch.optim.Adam(params, lr=self.base_lr,
                                    eps=args.adam_eps if args.adam_eps is not None else ADAM_EPS, **fused)
        self.clip = args.clip if args.clip is not None else DEFAULT_CLIP  # a resume keeps its run's
        self.aux_opt = torch.optim.Adam(aux, lr=args.aux_lr, **fused)
        self._main_params = params  # what --clip bounds: never the quantiles (their aux gradient is ~840)
        self.step = 0
        self.crops_seen = 0
        self.train_seconds = 0.0
        # the schedule lives in the checkpoint, so a resume without the flags keeps it
        self.decay_start = args.decay_start
        self.decay_steps = args.decay_steps if args.decay_steps is not None else DEFAULT_DECAY_STEPS
        self.warmup_from = 0
        self.best_val = None  # lowest validated RD loss (summed over levels) of raw or averaged weights
        self.parent = None  # metadata of the weights a warm start began from (kept in the checkpoint)

        ema_state = None
        self.resumed = resume is not None
        self._old_best_to = None
        if resume is not None:
            ema_state = self._load(ckpt, resume)
            del resume
            if self._new_validation and self.best_val is not None:
                self.best_val = None  # the next validation starts a new best; the old best.pt is kept aside
                self._old_best_to = f"best-to-step-{self.step}.pt"
                print(f"note: the validation differs from the run's until now (held-out images or --val-crop): "
                      f"its best.pt is not compared with the new measure, and is kept as {self._old_best_to} at "
                      f"the next checkpoint; the next validation starts a new best", file=sys.stderr)
            if args.init:
                print(f"--init {args.init}: this run started from it, so it is resumed (add --fresh to start "
                      "over)", file=sys.stderr)
        elif args.init:
            self._init_from(args.init)
        for g in self.aux_opt.param_groups:  # the command line's aux lr wins over a resumed one
            g["lr"] = args.aux_lr
        self.ema = None
        if args.ema > 0:
            self.ema = EMA(self.model, args.ema)  # a resumed run without an average starts one here
            if ema_state is not None:
                self.ema.load_state_dict(ema_state)
                self.ema.decay = float(args.ema)
        if args.rewarm:  # back to the constant rate after a decay, ramped over --warmup steps
            self.decay_start = None
            self.warmup_from = self.step
        elif args.decay_now and self.decay_start is None:
            self.decay_start = self.step
        if args.decay_minutes and self.decay_start is not None:
            raise RunConflict(f"error: the run in {self.run_dir} is already in a learning-rate decay (from step "
                             f"{self.decay_start}, {self.decay_steps} steps); to finish it, resume without "
                             f"--decay-minutes (--steps N for the steps left); to decay again from the constant "
                             f"rate, add --rewarm")

    def _load_images(self, files: List[Path], what: str) -> tuple:
        """(files, 8-bit RGB arrays) of those that decode; a damaged one is left out and said
        (one bad photo among many must not stop a run)."""
        kept, imgs, bad = [], [], []
        for p in files:
            try:
                imgs.append(load_rgb(p))
                kept.append(p)
            except Exception as e:
                bad.append((p, e))
        say_undecodable(bad, self.args.data, f"{what} image(s) could not be decoded and are left out")
        return kept, imgs

    def _make_sampler(self, images, seed: int):
        a = self.args
        if a.sampler == "device" or (a.sampler == "auto" and self.device.type != "cpu"):
            return DeviceCropSampler(images, a.crop, seed, self.device)
        return CropSampler(images, a.crop, seed)

    # -- state ---------------------------------------------------------------

    def _state(self) -> Dict:
        import torch

        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "aux_opt": self.aux_opt.state_dict(),
            "step": self.step,
            "crops_seen": self.crops_seen,
            "train_seconds": self.train_seconds,
            "decay_start": self.decay_start,
            "decay_steps": self.decay_steps,
            "warmup_from": self.warmup_from,
            "best_val": self.best_val,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "parent": self.parent,
            "config": {"arch": self.model.arch, "N": self.model.N, "M": self.model.M, "lambdas": list(self.model.lambdas),
                       "crop": self.args.crop, "batch": self.args.batch, "lr": self.base_lr,
                       "warmup": self.args.warmup, "val_images": self.args.val_images,
                       "val_files": self.val_names, "val_crop": self.args.val_crop,
                       "device": describe_device(self.device, self.args.threads), "amp": self.args.amp,
                       "clip": self.clip},
            "clip_scope": CLIP_SCOPE,
            "rng": {"torch": torch.get_rng_state(), "sampler": self.sampler.state(),
                    "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None},
        }

    def _claim_run_dir(self) -> None:
        """Before this run first writes into --run-dir: with --fresh, move the earlier run's
        files aside (set_aside_run).  Not at start-up, so that a fresh run stopped before its
        first log line or checkpoint leaves the earlier run where it was."""
        if self._fresh_pending:
            self._fresh_pending = False
            self._set_aside_to = set_aside_run(self.run_dir)

    def save(self, name: str = "last.pt") -> Path:
        import torch

        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._diverged("not finite")  # never a checkpoint of weights that are no longer numbers
        self._claim_run_dir()
        best = self.run_dir / "best.pt"
        if getattr(self, "_old_best_to", None) and best.exists():  # validated otherwise: kept, not overwritten
            os.replace(best, self.run_dir / self._old_best_to)
            print(f"step {self.step}: the earlier best.pt (validated otherwise) is kept as {self._old_best_to}",
                  file=sys.stderr)
        self._old_best_to = None
        path = self.run_dir / name
        atomic_torch_save(self._state(), path)
        return path

    def _load(self, path: Path, st: Optional[Dict] = None) -> None:
        import torch

        if st is None:
            st = read_checkpoint(path, resumed=True)
        cfg = st["config"]
        self.model.load_state_dict(st["model"])  # the same arch, N, M: keep_run_shape saw to that
        self.opt.load_state_dict(st["opt"])
        self.aux_opt.load_state_dict(st["aux_opt"])
        if self.args.adam_eps is not None:  # given: it wins over the checkpoint's (else the run keeps its own)
            for g in self.opt.param_groups:
                g["eps"] = self.args.adam_eps
        if self.args.clip is None and st.get("clip_scope") == CLIP_SCOPE and cfg.get("clip"):
            self.clip = float(cfg["clip"])
        if st.get("clip_scope") != CLIP_SCOPE:
            self._rescale_old_moments()
        self.step = st["step"]
        self.crops_seen = st["crops_seen"]
        self.train_seconds = st["train_seconds"]
        if self.args.decay_start is None:
            self.decay_start = st.get("decay_start")
        if self.args.lr is None:
            self.base_lr = cfg.get("lr") or DEFAULT_LR
        elif cfg.get("lr") and not math.isclose(float(cfg["lr"]), self.args.lr, rel_tol=1e-9):
            print(f"note: --lr {self.args.lr:g}, where the run had {float(cfg['lr']):g}: it goes on from its "
                  "checkpoint with the new rate", file=sys.stderr)
        if self.args.decay_steps is None:
            self.decay_steps = st.get("decay_steps") or DEFAULT_DECAY_STEPS
        self.warmup_from = st.get("warmup_from", 0)
        self.best_val = st.get("best_val")
        if self.best_val is not None and not math.isfinite(self.best_val):  # written before that was refused
            self.best_val = None
        self.parent = st.get("parent")
        torch.set_rng_state(st["rng"]["torch"])
        if self.device.type == "cuda" and st["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(st["rng"]["cuda"], self.device)
        try:
            self.sampler.set_state(st["rng"]["sampler"])
        except (ValueError, TypeError, KeyError):  # a checkpoint of the other sampler (other device)
            seed = self.args.seed + self.step
            self.sampler = self._make_sampler(self.sampler.images, seed)
            print(f"the checkpoint's crops came from another kind of sampler: this run's {self.sampler.kind} "
                  f"sampler starts a new stream (seed {seed})", file=sys.stderr)
        random.setstate(st["rng"]["python"])
        self._drop_log_after(self.step)
        print(f"resumed {path} at step {self.step}", file=sys.stderr)
        return st.get("ema")

    def _rescale_old_moments(self) -> None:
        """A checkpoint written before session 11 clipped the norm of *all* gradients, the
        quantiles' auxiliary one included (stale from the step before, and ~840 against a
        main gradient of 1-7), to the old --clip 1.0: every main gradient reached Adam divided
        by that norm.  Adam does not mind a constant factor, but its moments hold it: resumed
        with unscaled gradients, its steps would be up to ~10x too large for a hundred steps.
        Multiply the moments by the factor (the aux gradient's norm at these weights), so the
        run goes on as it was."""
        import torch

        q = [p for g in self.aux_opt.param_groups for p in g["params"]]
        aux = self.model.aux_loss()
        grads = torch.autograd.grad(aux, q, allow_unused=True)
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
        factor = max(1.0, norm / OLD_CLIP)
        if factor == 1.0:
            return
        for st in self.opt.state.values():
            if "exp_avg" in st:
                st["exp_avg"].mul_(factor)
                st["exp_avg_sq"].mul_(factor * factor)
        for g in self.opt.param_groups:  # the checkpoint's 1e-8 acted on gradients divided by factor
            g["eps"] = self.args.adam_eps if self.args.adam_eps is not None else ADAM_EPS
        print(f"this checkpoint clipped the aux gradient with the main ones (before session 11): Adam's moments "
              f"scaled by {factor:.1f} to the unclipped gradients, so the run continues as it was", file=sys.stderr)

    def _drop_log_after(self, step: int) -> None:
        """Forget log records past the checkpoint being resumed: those steps are redone,
        and keeping both copies would draw the curves twice over the same steps."""
        log = self.run_dir / "log.jsonl"
        if not log.exists():
            return
        lines = log.read_text().splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                if json.loads(line).get("step", 0) > step:
                    continue
            except ValueError:  # a line cut short by a kill
                continue
            kept.append(line)
        if len(kept) != len(lines):
            tmp = log.with_name(log.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, log)

    def _init_from(self, path: str) -> None:
        """Warm start: copy every tensor whose name and shape match (weights or checkpoint)."""
        if str(path).endswith(".safetensors"):
            from .weights import WeightsError, load_state_dict_file, read_metadata

            try:
                sd = load_state_dict_file(path)
                meta = read_metadata(path)
            except WeightsError as e:
                raise SystemExit(f"error: --init: {e}") from None
            src_lambdas = json.loads(meta["lambdas"]) if "lambdas" in meta else None
            # what the export of this run adds its own training to (aecodec.export.lineage)
            self.parent = {k: v for k, v in meta.items() if k == "model_id" or k.startswith("training_")}
        else:
            st = read_checkpoint(path)
            sd = st["model"]
            src_lambdas = st.get("config", {}).get("lambdas")
            self.parent = st.get("parent")
            if self.parent is not None:  # that run's own training counts too
                self.parent = {**self.parent, "via_checkpoint": {
                    "steps": st.get("step", 0), "crops": st.get("crops_seen", 0),
                    "hours": round(st.get("train_seconds", 0.0) / 3600, 3),
                    "device": st.get("config", {}).get("device", "unknown")}}
        own = self.model.state_dict()
        copied, skipped = 0, []
        dst_lambdas = list(self.model.lambdas)
        remap = src_lambdas is not None and (len(src_lambdas) != len(dst_lambdas) or not np.allclose(
            src_lambdas, dst_lambdas, rtol=1e-9, atol=0))
        for k, v in sd.items():
            if k.endswith(("_quantized_cdf", "_offset", "_cdf_length", "scale_table")) or k not in own:
                continue
            if k in ("log_gain", "log_inv_gain") and remap and v.shape[1:] == own[k].shape[1:]:
                sign = 1.0 if k == "log_gain" else -1.0
                for i, (j, offset) in enumerate(map_levels(src_lambdas, dst_lambdas)):
                    own[k][i] = v[j].to(own[k].dtype) + sign * offset
                copied += 1
            elif own[k].shape == v.shape:
                own[k] = v.to(own[k].dtype)
                copied += 1
            else:
                skipped.append(k)
        self.model.load_state_dict(own, strict=False)
        print(f"warm start from {path}: {copied} tensors copied"
              + (f" (quality levels mapped by lambda: {src_lambdas} -> {dst_lambdas})" if remap else ""),
              file=sys.stderr)
        if skipped:  # e.g. --N/--M other than the file's: most of the model then starts from scratch
            print(f"note: {len(skipped)} tensors of {path} have other shapes here and were not copied "
                  f"(e.g. {skipped[0]}: {tuple(sd[skipped[0]].shape)} there, {tuple(own[skipped[0]].shape)} here); "
                  f"this model is N={self.model.N} M={self.model.M}", file=sys.stderr)

    # -- loop ----------------------------------------------------------------

    METRICS = ("loss", "bpp", "psnr", "aux", "gnorm")

    def train_step(self) -> Dict[str, float]:
        """One optimiser step; its metrics as floats."""
        return dict(zip(self.METRICS, self._train_step().tolist()))

    def _rd_forward(self, x, q):
        """The training pass and its rate-distortion loss (compiled with --compile)."""
        from .model import rd_loss

        return rd_loss(self.model(x, q), x, self.lambdas[q])

    def _train_step(self):
        """One optimiser step; its metrics (METRICS, in order) as one tensor left on the
        device, so that a GPU run does not wait for every step to finish before queueing
        the next (the loop reads them back once per log line)."""
        import torch

        a = self.args
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, self.base_lr, a.warmup, self.decay_start, self.decay_steps,
                            warmup_from=self.warmup_from)
        x = self.sampler.batch(a.batch, self.device)
        q = self.sampler.levels(a.batch, self.model.levels).to(self.device)
        failed = None
        try:
            losses = self._rd(x, q)
            self.opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
        except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError):
            raise  # not the compiler's doing: a smaller --batch is the answer
        except Exception as e:  # the compiler failed on its first step: go on without it
            if not self._compile_unproven:
                raise
            failed = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            losses = None
        if failed is not None:  # retried outside the handler, so the failed attempt's memory is freed
            print(f"--compile failed ({failed}); training on without it", file=sys.stderr)
            self._rd = self._rd_forward
            losses = self._rd(x, q)
            self.opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
        self._compile_unproven = False
        gnorm = torch.nn.utils.clip_grad_norm_(self._main_params, self.clip)
        self.opt.step()
        aux = self.model.aux_loss()
        self.aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        self.aux_opt.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.crops_seen += a.batch
        mse = losses["mse"].detach()
        return torch.stack([
            losses["loss"].detach(),
            losses["bpp"].detach().mean(),
            (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean(),
            aux.detach(),
            gnorm.detach().to(mse.dtype),
        ])

    def probe(self, batches: List[int], amps=("off",), seconds: float = 3.0) -> List[Dict]:
        """Time training steps at each batch size and precision (weights change, nothing is
        saved): the measured choice of a batch for a device whose step time does not grow
        with it, and of mixed precision where it pays."""
        import torch

        torch.set_num_threads(self.args.threads)

        def sync():
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

        rows = []
        for amp, b in [(amp, b) for amp in amps for b in batches]:
            self.model.transform_dtype = torch.bfloat16 if amp == "bf16" else None
            self.args.batch = b
            for _ in range(3):  # warm-up: cudnn autotuning for the new shape, allocator growth
                self._train_step()
            sync()
            n, t0 = 0, time.time()
            while n < 3 or (time.time() - t0 < seconds and n < 200):
                self._train_step()
                n += 1
                if n % 10 == 0:
                    sync()
            sync()
            dt = time.time() - t0
            rows.append({"amp": amp, "batch": b, "steps_per_s": n / dt, "crops_per_s": n * b / dt})
            print(f"probe: amp {amp}, batch {b}: {n / dt:.2f} steps/s, {n * b / dt:.1f} crops/s", file=sys.stderr)
        return rows

    def validate(self, model=None) -> Dict:
        """Eval-mode (rounded latents) bpp/PSNR per level on centre crops of the held-out images."""
        import torch

        from .model import rd_loss

        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        c = self.args.val_crop
        crops = []
        for im in self.val_imgs:
            h, w = im.shape[:2]
            s = min(c, h, w) // 64 * 64
            t, l = (h - s) // 2, (w - s) // 2
            crops.append(torch.from_numpy(im[t:t + s, l:l + s].copy()).permute(2, 0, 1).float().div(255)[None]
                         .to(self.device))
        res = {"bpp": [], "psnr": [], "loss": []}
        with torch.no_grad():
            for q in range(self.model.levels):
                bpps, psnrs, losses = [], [], []
                for x in crops:
                    out = model(x, q)
                    out["x_hat"] = out["x_hat"].clamp(0, 1)
                    l = rd_loss(out, x, self.lambdas[q:q + 1])
                    bpps.append(float(l["bpp"].mean()))
                    psnrs.append(float(10 * torch.log10(1 / l["mse"].mean())))
                    losses.append(float(l["loss"]))
                res["bpp"].append(float(np.mean(bpps)))
                res["psnr"].append(float(np.mean(psnrs)))
                res["loss"].append(float(np.mean(losses)))
        model.train(was_training)
        return res

    def log(self, rec: Dict) -> None:
        self._claim_run_dir()
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def run(self) -> Optional[str]:
        """Train until --steps, --minutes or a signal; the signal's name if one stopped it."""
        import torch

        a = self.args
        torch.set_num_threads(a.threads)
        start = time.time()
        last_ckpt = last_val = time.time()
        window: List[Dict[str, float]] = []
        target_step = self.step + a.steps if a.steps else None
        deadline = start + a.minutes * 60 if a.minutes else None
        # --decay-minutes: the last minutes of the run are a cosine decay, its length in steps
        # measured from this run's own speed (past its first fifth: warm-up, cudnn autotuning),
        # in this process: no resume between the constant rate and the decay
        decay_at = deadline - a.decay_minutes * 60 if deadline and a.decay_minutes else None
        rate_mark = (start, self.step)
        decay_end = None
        # the last logged losses, to report a spike as it happens (a resumed run's from its log:
        # a resume can spike in its first steps, as on the H100 in session 9)
        recent: List[float] = []
        if self.resumed and (self.run_dir / "log.jsonl").exists():
            recent = [r["loss"] for r in read_log(self.run_dir / "log.jsonl")["train"][-20:] if "loss" in r]
        in_spike = False
        self._stop_signal = None
        previous = self._catch_stop_signals()
        print(f"training N={self.model.N} M={self.model.M} batch {a.batch}x{a.crop}^2 on {self.device} "
              f"from step {self.step}",
              file=sys.stderr)
        try:
            from tqdm import tqdm

            bar = tqdm(total=target_step - self.step if target_step else None, file=sys.stderr,
                       disable=a.quiet, mininterval=2.0, dynamic_ncols=True)
        except ImportError:  # pragma: no cover
            bar = None
        try:
            while self._stop_signal is None:
                if target_step is not None and self.step >= target_step:
                    break
                if deadline is not None and time.time() >= deadline:
                    break
                if decay_end is not None and self.step >= decay_end:
                    break
                if decay_at is not None and decay_end is None:
                    now = time.time()
                    # not inside a warm-up, whose ramp lr_at lets win over a decay
                    if now >= decay_at and self.step >= self.warmup_from + a.warmup:
                        n = plan_timed_decay(self.step - rate_mark[1], now - rate_mark[0], deadline - now)
                        self.decay_start, self.decay_steps = self.step, n
                        decay_end = self.step + n
                        self.save("decay-start.pt")  # the weights at the constant rate, before the decay
                        self.log({"kind": "decay", "step": self.step, "time": now, "steps": n})
                        speed = (self.step - rate_mark[1]) / max(now - rate_mark[0], 1e-9)
                        print(f"step {self.step}: cosine decay over {n} steps ({(deadline - now) / 60:.1f} min left; "
                              f"{speed:.2f} steps/s so far)", file=sys.stderr)
                    elif rate_mark[0] == start and now - start >= 0.2 * (decay_at - start):
                        rate_mark = (now, self.step)
                t0 = time.time()
                window.append(self._train_step())
                self.train_seconds += time.time() - t0
                if bar is not None:
                    bar.update(1)
                if self.step % a.log_every == 0:
                    avg = dict(zip(self.METRICS, torch.stack(window).mean(0).tolist()))
                    self.log({"kind": "train", "step": self.step, "time": time.time(),
                              "lr": self.opt.param_groups[0]["lr"], **avg})
                    window = []
                    if not math.isfinite(avg["loss"]):
                        self._diverged(avg["loss"])
                    spike = loss_spike(avg["loss"], recent)
                    if spike and not in_spike:  # once per spike, in the output a remote run returns
                        msg = (f"step {self.step}: loss spike: {avg['loss']:.4g} against a recent median of "
                               f"{spike:.4g} (lr {self.opt.param_groups[0]['lr']:.3g})")
                        if bar is not None and not bar.disable:
                            bar.write(msg, file=sys.stderr)  # on its own line, not inside the bar's
                        else:
                            print(msg, file=sys.stderr)
                    in_spike = bool(spike)
                    recent = (recent + [avg["loss"]])[-20:]
                    if bar is not None:
                        bar.set_postfix(step=self.step, loss=f"{avg['loss']:.3f}", bpp=f"{avg['bpp']:.3f}",
                                        psnr=f"{avg['psnr']:.2f}", refresh=False)
                if time.time() - last_ckpt >= a.ckpt_minutes * 60:
                    validate = time.time() - last_val >= a.val_minutes * 60
                    self.checkpoint_and_validate(validate=validate)
                    last_ckpt = time.time()
                    if validate:
                        last_val = last_ckpt
        except KeyboardInterrupt:
            if self._stop_signal is not None:  # a second signal during a step: abort, no half-step checkpoint
                self._restore_signals(previous)
                raise
            self._stop_signal = "SIGINT"
        except BaseException:  # a divergence (SystemExit), an error: leave the caller's handlers as they were
            self._restore_signals(previous)
            raise
        finally:
            if bar is not None:
                bar.close()
        if decay_at is not None and decay_end is None and not self._stop_signal:
            print(f"note: the run ended at step {self.step}, inside its learning-rate warm-up (to step "
                  f"{self.warmup_from + a.warmup}), so the --decay-minutes decay never began: give it more "
                  "--minutes, or a shorter --warmup", file=sys.stderr)
        try:
            if self._stop_signal:  # stopped by hand: a checkpoint at once; validation is for the next run
                print(f"{self._stop_signal}: saving a checkpoint, then stopping (again to abort; the "
                      "previous checkpoint is kept)", file=sys.stderr)
                self.checkpoint_and_validate(validate=False)
            else:
                self.checkpoint_and_validate()
        finally:
            self._restore_signals(previous)
        return self._stop_signal

    def _catch_stop_signals(self) -> Dict:
        """SIGINT and SIGTERM end the run after the current step, with a checkpoint.

        Installed explicitly: a run started in the background (``nohup ... &``)
        inherits an ignored SIGINT, and Python then never raises
        KeyboardInterrupt, so Ctrl-C/``kill -INT`` would do nothing.
        """
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum, _frame):
            if self._stop_signal is not None:  # a second signal: abort (checkpoints are written atomically)
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
        return previous

    @staticmethod
    def _restore_signals(previous: Dict) -> None:
        import signal

        for sig, handler in previous.items():
            if handler is not None:  # None: a handler not installed from Python
                signal.signal(sig, handler)

    def _keep_best(self, val: Dict, weights: str) -> None:
        """Write best.pt when ``weights`` ("ema" or "raw", the better validated of the two)
        reach the lowest validation loss so far; best.pt records which, for export.

        A loss spike drags the moving average down for ~1/(1-decay) steps; best.pt keeps
        the last good state for a release meanwhile.  At the end of a learning-rate decay
        the raw weights overtake their lagging average."""
        score = float(sum(val["loss"]))
        if not math.isfinite(score):  # never a best; and a NaN best would let anything replace it
            return
        if self.best_val is not None and score >= self.best_val:
            return
        self.best_val = score
        self.save()  # record best_val in last.pt too
        atomic_torch_save({**self._state(), "export_weights": weights}, self.run_dir / "best.pt")
        print(f"step {self.step}: best validation so far ({weights} weights, loss {score:.4f}), kept as best.pt",
              file=sys.stderr)

    def _diverged(self, loss) -> None:
        """Stop without saving: weights that are no longer numbers must not replace the last
        good checkpoint (nor best.pt)."""
        last = self.run_dir / "last.pt"
        if last.exists():
            where = f"{last} keeps the last good checkpoint: resume it with a lower --lr"
        else:
            where = "this run wrote no checkpoint: start it again with a lower --lr"
        if self._set_aside_to is not None:
            where += f" (the earlier run in {self.run_dir} was moved to {self._set_aside_to})"
        raise SystemExit(f"error: training diverged at step {self.step} (loss {loss}, lr "
                         f"{self.opt.param_groups[0]['lr']:.3g}): nothing was saved; {where}")

    def _plot(self) -> None:
        try:
            plot_log(self.run_dir / "log.jsonl", self.run_dir / "curves.png")
        except Exception as e:  # a plot must never stop training
            print(f"warning: could not plot the training curves: {e}", file=sys.stderr)

    def checkpoint_and_validate(self, validate: bool = True) -> None:
        path = self.save()
        if not validate:
            self._plot()  # the curves up to this checkpoint (an interrupted run's too)
            print(f"step {self.step}: checkpoint {path}", file=sys.stderr)
            return
        v = self.validate()
        self.log({"kind": "val", "step": self.step, "time": time.time(), **v})
        if self.ema is not None:
            e = self.validate(self.ema.model)
            self.log({"kind": "val_ema", "step": self.step, "time": time.time(), **e})
            print(f"step {self.step}: EMA val psnr " + " ".join(f"{p:.2f}" for p in e["psnr"]), file=sys.stderr)
        if self.ema is not None and sum(e["loss"]) <= sum(v["loss"]):
            self._keep_best(e, "ema")
        else:
            self._keep_best(v, "raw")
        self._plot()
        print(f"step {self.step}: checkpoint {path}; val (raw weights) bpp "
              + " ".join(f"{b:.3f}" for b in v["bpp"]) + " | psnr "
              + " ".join(f"{p:.2f}" for p in v["psnr"]), file=sys.stderr)


def read_log(log_path) -> Dict[str, List[Dict]]:
    """log.jsonl's records by kind: train, val (the weights), val_ema (their moving average)."""
    rows: Dict[str, List[Dict]] = {"train": [], "val": [], "val_ema": []}
    for line in Path(log_path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if rec.get("kind") in rows:
            rows[rec["kind"]].append(rec)
    return rows


def plot_log(log_path, out_png) -> None:
    """Training loss/bpp/PSNR against step, and the validation RD points per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    train = rows["train"]
    # the moving average is what gets exported, when the run keeps one
    val, which = (rows["val_ema"], "moving average") if rows["val_ema"] else (rows["val"], "weights")
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    if train:
        st = [r["step"] for r in train]
        ax[0].plot(st, [r["loss"] for r in train], lw=0.8)
        ax[0].set_yscale("log")
        ax[0].set_title("training loss (all levels)")
        ax[1].plot(st, [r["psnr"] for r in train], lw=0.8, label="train PSNR (dB)")
        ax[1].set_title("training PSNR (dB), mean over levels")
    if val:
        levels = len(val[-1]["psnr"])
        for i in range(levels):
            ax[1].plot([r["step"] for r in val], [r["psnr"][i] for r in val], "--", lw=0.8)
        cmap = plt.get_cmap("viridis")
        for j, r in enumerate(val):
            c = cmap(j / max(1, len(val) - 1))
            ax[2].plot(r["bpp"], r["psnr"], "o-", ms=3, color=c, lw=0.8,
                       label=f"step {r['step']}" if j in (0, len(val) - 1) else None)
        ax[2].set_xlabel("bpp (estimated)")
        ax[2].set_ylabel("PSNR (dB)")
        ax[2].set_title(f"validation RD (held-out crops, {which})")
        ax[2].legend()
    for a in ax[:2]:
        a.set_xlabel("step")
    fig.tight_layout()
    tmp = Path(str(out_png) + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out_png)


def recommend_batch(rows: List[Dict], min_gain: float = 1.2) -> int:
    """The largest probed batch reached through steps that each raise the crops per second
    by at least ``min_gain`` (a larger batch at a still-low step cost is more training per
    second; one that barely adds throughput only takes steps away)."""
    rows = sorted(rows, key=lambda r: r["batch"])
    best = rows[0]
    for r in rows[1:]:
        if r["crops_per_s"] >= min_gain * best["crops_per_s"]:
            best = r
        else:
            break
    return int(best["batch"])


def recommend(rows: List[Dict], min_amp_gain: float = 1.3) -> tuple:
    """(amp, batch) from probe rows: each precision's recommended batch; bf16 only where it
    gives at least ``min_amp_gain`` times the crops per second of float32 (its numerics are
    a risk worth taking only for a clear gain)."""
    best = {}
    for amp in dict.fromkeys(r.get("amp", "off") for r in rows):
        sub = [r for r in rows if r.get("amp", "off") == amp]
        b = recommend_batch(sub)
        best[amp] = (b, next(r["crops_per_s"] for r in sub if r["batch"] == b))
    if "bf16" in best and "off" in best and best["bf16"][1] < min_amp_gain * best["off"][1]:
        del best["bf16"]
    amp = "bf16" if "bf16" in best else next(iter(best))
    return amp, best[amp][0]


def build_parser() -> argparse.ArgumentParser:
    class Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        def _get_help_string(self, action):  # "(default: X)" only where the help does not say it already
            h = action.help or ""
            if "default" in h or action.default is None or action.default is False \
                    or action.default is argparse.SUPPRESS:
                return h
            return super()._get_help_string(action)

    from ._argparse import OneLineParser

    p = OneLineParser(prog="python -m aecodec.train", description=__doc__, formatter_class=Fmt)
    p.add_argument("data", help="folder of training images, searched recursively: "
                   + ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTS)) + " (other files are ignored; "
                   f"images under {MIN_SIDE} pixels on a side, or that do not decode, are left out and said)")
    p.add_argument("--run-dir", default="~/.cache/aecodec/runs/main",
                   help="checkpoints and logs; an existing last.pt here is resumed")
    p.add_argument("--init", help="warm start from weights (.safetensors) or a checkpoint when the run is new")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run (from --init, or new weights) instead of resuming the one in --run-dir; "
                        "that run's checkpoints and log are moved into a replaced-DATE folder there, not deleted")
    p.add_argument("--arch", default=None,
                   choices=["gained-mean-scale-hyperprior", "linear-gained-hyperprior"],
                   help="the deep model (default), or its linear twin (the PCA-like sanity baseline); kept in the checkpoint")
    p.add_argument("--lambdas", metavar="L1,L2,...",
                   help="the quality levels' rate-distortion trade-offs, increasing (default: CompressAI's eight, "
                        "or the resumed checkpoint's); with --init, trained levels keep their gains and new ones "
                        "start from the nearest trained level")
    p.add_argument("--N", type=int, default=None,
                   help=f"channels of the transforms' hidden layers (default {DEFAULT_N}; kept in the checkpoint)")
    p.add_argument("--M", type=int, default=None,
                   help=f"channels of the latent y (default {DEFAULT_M}; kept in the checkpoint)")
    p.add_argument("--crop", type=int, default=None,
                   help=f"side of the random training crops in pixels, a multiple of 64; smaller images are not "
                        f"used (default {DEFAULT_CROP}; kept in the checkpoint)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"crops per step (default {DEFAULT_BATCH}; kept in the checkpoint)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate after the warm-up (default {DEFAULT_LR}; kept in the checkpoint)")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"steps of linear learning-rate warm-up (default {DEFAULT_WARMUP}; kept in the checkpoint)")
    p.add_argument("--decay-start", type=int, default=None, help="step at which cosine decay begins")
    p.add_argument("--decay-now", action="store_true", help="begin the cosine decay at the current step")
    p.add_argument("--decay-steps", type=int, default=None,
                   help=f"length of the cosine decay (default {DEFAULT_DECAY_STEPS}; kept in the checkpoint)")
    p.add_argument("--decay-minutes", type=float, default=0, metavar="D",
                   help="with --minutes: spend the run's last D minutes on a cosine decay, its length in steps "
                        "measured from the run's own speed, in the same process (the weights at the start of "
                        "the decay are kept as decay-start.pt; default 0: none)")
    p.add_argument("--rewarm", action="store_true",
                   help="end a decay: ramp the learning rate back to --lr over --warmup steps from the current step")
    p.add_argument("--adam-eps", type=float, default=None,
                   help="Adam's epsilon for the main parameters (default: 1e-5, what the shipped weights were "
                        "trained with in effect, docs/GPU.md; a resumed run keeps its own)")
    p.add_argument("--clip", type=float, default=None,
                   help="largest norm of the gradient of the transforms and entropy models (not the quantiles' "
                        "auxiliary one); at the shipped weights a step's is 1-7, so the default, 50, catches "
                        "spikes only (a resumed run keeps its own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops, levels and initial weights")
    p.add_argument("--steps", type=int, default=0, help="stop after this many more steps (0: no limit)")
    p.add_argument("--minutes", type=float, default=0,
                   help="stop after this many minutes of steps, then checkpoint and validate (0: no limit)")
    p.add_argument("--ckpt-minutes", type=float, default=4.0, help="minutes between checkpoints")
    p.add_argument("--val-minutes", type=float, default=12.0,
                   help="minutes between validations (at the next checkpoint; each costs ~7%% of the "
                        "training time when run every 4 minutes on 2 cores); the run's last checkpoint "
                        "is always validated")
    p.add_argument("--log-every", type=int, default=25, help="steps per line of log.jsonl")
    p.add_argument("--val-images", type=int, default=None,
                   help=f"images held out of DATA for validation (default {DEFAULT_VAL_IMAGES}; at most one in 20 of "
                        "DATA's images, at least 1; kept in the checkpoint)")
    p.add_argument("--val-crop", type=int, default=None,
                   help=f"side of the centre crops validated (default {DEFAULT_VAL_CROP}; kept in the checkpoint)")
    p.add_argument("--aux-lr", type=float, default=3e-3, help="learning rate of the entropy bottleneck quantiles")
    p.add_argument("--ema", type=float, default=0.999,
                   help="decay of the weights' moving average, which is validated and exported (0: off)")
    p.add_argument("--threads", type=int, default=max(1, min(os.cpu_count() or 1, 8)), help="torch threads")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N, or auto (a GPU when torch sees one); checkpoints load on either")
    p.add_argument("--pack-to", metavar="DIR",
                   help="instead of training, write DATA's training split (not its held-out images) as "
                        "JPEG q95 4:4:4 into DIR, a compact copy to carry to another machine")
    p.add_argument("--sampler", choices=["auto", "host", "device"], default="auto",
                   help="where the crops are cut: on the host (numpy), or on the training device from "
                        "images held there (auto: the device when it is a GPU)")
    p.add_argument("--amp", choices=["off", "bf16", "auto"], default="off",
                   help="mixed precision: bf16 runs the transforms' convolutions in bfloat16 (GDN, entropy "
                        "models and loss stay float32); for a GPU whose step is bound by convolution "
                        "time (slower on these CPUs); experimental: its gradients were measured far off "
                        "float32's (docs/EXPERIMENTS.md). auto, with --probe-batches: probe both")
    p.add_argument("--compile", action="store_true",
                   help="compile the training pass with torch.compile (inductor): the first steps take a "
                        "minute or two longer, then each step is faster (1.3-1.4x in probes on these 2 CPU "
                        "cores at batch 16 x 256²); needs a C++ compiler (a failure falls back to eager)")
    p.add_argument("--probe-batches", metavar="B,B,...",
                   help="instead of training, time a few steps at each of these batch sizes (from --init "
                        "or new weights; nothing is saved) and print steps/s and crops/s per batch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None, prog=None) -> int:
    parser = build_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    for name in ("crop", "val_crop"):
        why = getattr(args, name) is not None and crop_problem(getattr(args, name))
        if why:
            parser.error(f"--{name.replace('_', '-')} {why}")
    for name, low in (("batch", 1), ("N", 1), ("M", 1), ("threads", 1), ("log_every", 1), ("val_images", 1),
                      ("warmup", 0), ("steps", 0), ("decay_steps", 1), ("decay_start", 0), ("seed", 0)):
        v = getattr(args, name)
        if v is not None and v < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {v}")
    for name in ("lr", "aux_lr", "ckpt_minutes", "clip", "adam_eps"):
        v = getattr(args, name)
        if v is not None and not (v > 0 and math.isfinite(v)):
            parser.error(f"--{name.replace('_', '-')} must be a positive number, got {v}")
    for name in ("minutes", "val_minutes"):
        if not getattr(args, name) >= 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if not 0 <= args.ema < 1:
        parser.error(f"--ema must be in [0, 1), got {args.ema}")
    try:
        return _main(parser, args)
    except SystemExit as e:  # the trainer's own one-line errors ("error: ...")
        if isinstance(e.code, str):
            print(f"{parser.prog}: {e.code}", file=sys.stderr)
            return 2 if isinstance(e, RunConflict) else 1
        raise
    except (ValueError, OSError) as e:  # bad data (no image large enough, unreadable files): one line
        if os.environ.get("AECODEC_DEBUG"):
            raise
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def _main(parser, args) -> int:
    if args.rewarm and (args.decay_now or args.decay_start is not None):
        parser.error("--rewarm ends a decay; it cannot be combined with --decay-now or --decay-start")
    if args.decay_minutes:
        if not args.decay_minutes > 0:
            parser.error(f"--decay-minutes must be positive, got {args.decay_minutes}")
        if not args.minutes > args.decay_minutes:
            parser.error("--decay-minutes is the end of a run of --minutes, which must be longer")
        if args.decay_now or args.decay_start is not None or args.decay_steps is not None or args.steps:
            parser.error("--decay-minutes plans the decay itself from --minutes; drop --decay-now, --decay-start, "
                         "--decay-steps and --steps")
    data = Path(args.data).expanduser().resolve()
    for opt, d in (("--run-dir", args.run_dir), ("--pack-to", args.pack_to)):
        if d and data.is_dir() and data in (Path(d).expanduser().resolve(), *Path(d).expanduser().resolve().parents):
            parser.error(f"{opt} {d} is inside the training folder {args.data}: its files (the plot, a pack) "
                         "would be read as training images; put it elsewhere")
    if args.pack_to:
        if Path(args.pack_to).is_dir() and any(Path(args.pack_to).iterdir()):
            parser.error(f"--pack-to {args.pack_to}: the folder is not empty; pack into a new or empty folder")
        keep_run_shape(args, None)  # the defaults (a pack resumes nothing)
        r = pack_training_images(Path(args.data), Path(args.pack_to), args.val_images)
        print(f"packed {r['images']} training images (held-out ones left out) into {args.pack_to}: "
              f"{r['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
        return 0
    if args.lambdas:
        try:
            parse_lambdas(args.lambdas)
        except ValueError as e:
            parser.error(str(e))
    conflict = init_conflict(args)
    if conflict:  # before minutes of loading images
        parser.error(conflict)
    try:  # a bad --device or --run-dir is a usage error, said before minutes of loading images
        resolve_device(args.device)
    except SystemExit as e:
        parser.error(str(e.code).removeprefix("error: "))
    rd = Path(args.run_dir).expanduser()
    if rd.exists() and not rd.is_dir():
        parser.error(f"--run-dir {args.run_dir}: a file, not a folder")
    if args.init and not Path(args.init).is_file():
        raise SystemExit(f"error: --init {args.init}: {'is a directory' if Path(args.init).is_dir() else 'no such file'}")
    tune_malloc()
    if args.probe_batches:
        try:
            batches = [int(v) for v in args.probe_batches.split(",")]
        except ValueError:
            batches = []
        if not batches or min(batches) < 1:
            parser.error(f"--probe-batches takes batch sizes like 16,32,64, got {args.probe_batches!r}")
        amps = [args.amp] if args.amp != "auto" else ["off", "bf16"]
        rows = Trainer(args).probe(batches, amps)
        amp, batch = recommend(rows)
        print(json.dumps({"probe": rows, "recommended_batch": batch, "recommended_amp": amp}))
        return 0
    if args.amp == "auto":
        parser.error("--amp auto is for --probe-batches; train with --amp off or bf16")
    if not args.fresh and rd.is_dir() and not (rd / "last.pt").exists():
        earlier = [n for n in RUN_FILES if (rd / n).exists()]
        if earlier:  # a new run would overwrite best.pt and continue that run's log
            parser.error(f"--run-dir {args.run_dir} holds an earlier run's {', '.join(earlier)} but no last.pt to "
                         "resume: add --fresh to start a new run there (those files are then moved into a "
                         "replaced-DATE folder), or use another --run-dir")

    import signal

    trainer = None
    made = rd.absolute()  # the outermost folder this run creates (none when --run-dir exists)
    while not made.parent.exists():
        made = made.parent
    new_dir = not made.exists()
    try:
        try:
            trainer = Trainer(args)  # loading takes a while: Ctrl-C here is an abort too, not a traceback
        except (SystemExit, ValueError, OSError):
            if new_dir:  # a run that never started (a bad --init, no usable image) leaves no empty folders
                d = rd.absolute()
                while True:
                    try:
                        d.rmdir()
                    except OSError:
                        break
                    if d == made:
                        break
                    d = d.parent
            raise
        stopped = trainer.run()  # without --steps/--minutes: until interrupted (Ctrl-C saves a checkpoint)
    except KeyboardInterrupt:  # a second signal: no checkpoint of a half-done step
        print("aborted; the run directory keeps its previous checkpoint", file=sys.stderr)
        stopped = getattr(trainer, "_stop_signal", None) or "SIGINT"
    return 128 + signal.Signals[stopped].value if stopped else 0  # 130 after Ctrl-C, 143 after kill


if __name__ == "__main__":
    from ._argparse import run_main

    sys.exit(run_main(main, prog="python -m aecodec.train"))
