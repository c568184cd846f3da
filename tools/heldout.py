#!/usr/bin/env python
"""Compare weights files on the training run's held-out images, the same way
training validates (eval mode, rounded latents, the model's own rate estimate,
centre crops): per-level bpp and PSNR, the summed RD loss, and the BD-rate of
each file against the first.  A quick check (a minute or two on 2 cores) before
spending a Kodak benchmark on new weights, e.g. those returned by a GPU run.

    python tools/heldout.py ../shared/data/train/images weights/OLD.safetensors NEW.safetensors [...]

The held-out images are the ones ``aecodec train DATA`` holds out (``--val-images``,
default 8, chosen by a hash of the file name), so no run on DATA or on its
``--pack-to`` copy has trained on them.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path


def _validate(model, images, crop: int):
    """Trainer.validate on ``images``: it needs only these attributes, so "validation"
    keeps one definition."""
    import torch

    from aecodec.train import Trainer

    ctx = types.SimpleNamespace(args=types.SimpleNamespace(val_crop=crop), val_imgs=images, model=model,
                                lambdas=torch.tensor(model.lambdas), device=torch.device("cpu"))
    return Trainer.validate(ctx, model)


def evaluate(data, files, val_images: int = 8, crop: int = 256, train_images: int = 0):
    """[(file, validation dict, BD-rate % against the first file, gap)]: gap is the summed
    RD loss on the held-out crops over that on ``train_images`` training photos (evenly
    spread over the training split), None when train_images is 0.  A gap that grows
    from one set of weights to the next is overfitting."""
    from aecodec.bdrate import bd_rate
    from aecodec.train import load_rgb, training_split
    from aecodec.weights import build_model, load_state_dict_file, read_metadata

    train, held_out = training_split(data, val_images)
    images = [load_rgb(p) for p in held_out]
    seen = [load_rgb(p) for p in train[::max(1, len(train) // train_images)][:train_images]] if train_images else []
    rows, ref = [], None
    for f in files:
        state = load_state_dict_file(f)  # first: it turns a file that is not safetensors into WeightsError
        model = build_model(read_metadata(f), state)
        v = _validate(model, images, crop)
        ref = ref or v
        gap = sum(v["loss"]) / sum(_validate(model, seen, crop)["loss"]) if seen else None
        rows.append((f, v, bd_rate(ref["bpp"], ref["psnr"], v["bpp"], v["psnr"]), gap))
    return rows


def main(argv=None) -> int:
    from aecodec._argparse import OneLineParser as Parser

    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="the training data folder (its held-out images are used)")
    p.add_argument("weights", nargs="+", help=".safetensors files; the first is the reference")
    p.add_argument("--val-images", type=int, default=8, help="as given to aecodec train (default: 8)")
    p.add_argument("--crop", type=int, default=256, help="side of the centre crops, a multiple of 64 (default: 256)")
    p.add_argument("--train-images", type=int, default=0, metavar="N",
                   help="also validate on N training photos and print held-out loss / training loss "
                        "(the overfitting gap)")
    a = p.parse_args(argv)
    for f in a.weights:
        if not Path(f).is_file():
            p.error(f"no such weights file: {f}")
    if a.train_images < 0:
        p.error("--train-images must be 0 or more")
    if a.val_images < 1:
        p.error("--val-images must be at least 1")
    from aecodec.train import crop_problem, training_split

    if crop_problem(a.crop):
        p.error(f"--crop {crop_problem(a.crop)}")
    if not Path(a.data).is_dir():
        p.error(f"no such folder: {a.data}")
    from aecodec.weights import WeightsError, build_model, load_state_dict_file, read_metadata

    try:
        for f in a.weights:  # every file checked before minutes are spent on the first
            state = load_state_dict_file(f)  # first: it turns a file that is not safetensors into WeightsError
            build_model(read_metadata(f), state)
        train, held_out = training_split(a.data, a.val_images)
    except (WeightsError, KeyError, ValueError) as e:
        p.exit(1, f"{p.prog}: error: {e}\n")
    if len(held_out) < a.val_images:  # training's rule: at most one image in 20 is held out
        n = len(train) + len(held_out)
        print(f"note: {len(held_out)} held-out image(s), not {a.val_images}: of the {n} images in {a.data}, "
              "aecodec train holds out one in 20 at most (at least one)", file=sys.stderr)
    try:
        rows = evaluate(a.data, a.weights, a.val_images, a.crop, a.train_images)
    except (WeightsError, KeyError, ValueError) as e:  # not aecodec weights: one line, exit 1
        p.exit(1, f"{p.prog}: error: {e}\n")
    for f, v, bd, gap in rows:
        bd_text = "no overlap with the first" if bd is None or bd != bd else f"{bd:+.2f} %"
        gap_text = f", held-out/training loss {gap:.3f}" if gap is not None else ""
        print(f"{Path(f).name}: BD-rate {bd_text}, loss {sum(v['loss']):.3f}{gap_text}; bpp "
              + " ".join(f"{b:.3f}" for b in v["bpp"]) + "; PSNR " + " ".join(f"{x:.2f}" for x in v["psnr"]),
              flush=True)
    return 0


if __name__ == "__main__":
    from aecodec._argparse import run_main

    sys.exit(run_main(main))
