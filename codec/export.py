"""Export a training checkpoint as release weights (safetensors + manifest entry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional


def load_checkpoint_model(ckpt_path, use_ema: bool = True):
    import torch

    from .model import ARCHITECTURES, GainedMeanScaleHyperprior

    st = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = st["config"]
    cls = ARCHITECTURES[cfg.get("arch", GainedMeanScaleHyperprior.arch)]
    model = cls(N=cfg["N"], M=cfg["M"], lambdas=cfg["lambdas"])
    ema = st.get("ema") if use_ema else None
    model.load_state_dict(ema["model"] if ema else st["model"], strict=False)
    st["exported_weights"] = f"moving average (decay {ema['decay']}, {ema['n']} steps)" if ema else "raw"
    model.eval()
    return model, st


def export_checkpoint(ckpt_path, out_path, register_in: Optional[Path] = None,
                      extra_meta: Optional[Dict] = None, use_ema: bool = True) -> Dict:
    from .weights import export, register

    model, st = load_checkpoint_model(ckpt_path, use_ema=use_ema)
    meta = {
        "training_steps": st.get("step", 0),
        "training_crops_seen": st.get("crops_seen", 0),
        "training_hours": round(st.get("train_seconds", 0.0) / 3600, 3),
        "training_config": st.get("config", {}),
        "training_weights": st["exported_weights"],
    }
    meta.update(extra_meta or {})
    entry = export(model, out_path, extra_meta=meta)
    if register_in is not None:
        register(entry, register_in)
    return entry


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m aecodec.export", description=__doc__)
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--raw", action="store_true", help="export the raw weights, not their moving average")
    p.add_argument("--register", action="store_true", help="add to the manifest next to OUT as the default")
    a = p.parse_args(argv)
    out = Path(a.out)
    entry = export_checkpoint(a.ckpt, out, register_in=out.parent if a.register else None,
                              use_ema=not a.raw)
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
