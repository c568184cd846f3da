"""Export a training checkpoint as release weights (safetensors + manifest entry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional


WEIGHTS = {"auto": None, "ema": True, "raw": False}  # --weights choice -> use_ema


def load_checkpoint_model(ckpt_path, use_ema: Optional[bool] = None):
    """The model of a checkpoint: its moving average (use_ema=True), its raw weights
    (False), or (None) the ones its validation preferred: best.pt records which; any
    other checkpoint gives its moving average when it has one."""
    import torch

    from .model import ARCHITECTURES, GainedMeanScaleHyperprior

    st = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = st["config"]
    cls = ARCHITECTURES[cfg.get("arch", GainedMeanScaleHyperprior.arch)]
    model = cls(N=cfg["N"], M=cfg["M"], lambdas=cfg["lambdas"])
    if use_ema and st.get("ema") is None:
        raise ValueError("no moving average in it; use --weights raw")
    if use_ema is None:
        use_ema = st.get("export_weights", "ema") == "ema"
    ema = st.get("ema") if use_ema else None
    model.load_state_dict(ema["model"] if ema else st["model"], strict=False)
    st["exported_weights"] = f"moving average (decay {ema['decay']}, {ema['n']} steps)" if ema else "raw"
    model.eval()
    return model, st


def export_checkpoint(ckpt_path, out_path, register_in: Optional[Path] = None,
                      extra_meta: Optional[Dict] = None, use_ema: Optional[bool] = None) -> Dict:
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
    p.add_argument("--weights", choices=list(WEIGHTS), default="auto",
                   help="moving average or raw weights (auto: what best.pt's validation preferred, else the average)")
    p.add_argument("--register", action="store_true", help="add to the manifest next to OUT as the default")
    a = p.parse_args(argv)
    out = Path(a.out)
    entry = export_checkpoint(a.ckpt, out, register_in=out.parent if a.register else None,
                              use_ema=WEIGHTS[a.weights])
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
