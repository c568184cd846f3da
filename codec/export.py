"""Export a training checkpoint as release weights (safetensors + manifest entry)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Optional


WEIGHTS = {"auto": None, "ema": True, "raw": False}  # --weights choice -> use_ema


def load_checkpoint_model(ckpt_path, use_ema: Optional[bool] = None):
    """The model of a checkpoint: its moving average (use_ema=True), its raw weights
    (False), or (None) the ones its validation preferred: best.pt records which; any
    other checkpoint gives its moving average when it has one."""
    import torch

    from .model import ARCHITECTURES, GainedMeanScaleHyperprior

    from .train import unpickle_problem

    try:  # tensors and plain Python values only: unpickling anything else could run its code
        st = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "Weights only load failed" in str(e):
            raise ValueError(unpickle_problem(e)) from None
        raise
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


def _hours_by_device(value, device: str) -> Dict[str, float]:
    """A ``training_hours`` field (a number, or a JSON object of hours per machine) as a dict."""
    try:
        v = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    if isinstance(v, dict):
        return {str(k): float(x) for k, x in v.items()}
    return {device: float(v)} if isinstance(v, (int, float)) else {}


def lineage(parent: Dict, st: Dict) -> Dict:
    """Cumulative training record of a run that warm-started from released weights.

    ``parent`` is the metadata of those weights (``model_id`` and ``training_*``, as the
    trainer stored it at ``--init``; with ``via_checkpoint`` when the start was another
    run's checkpoint that itself began from weights).  The totals (steps, crops, hours per
    machine) add this run to the parent's; ``training_lineage`` lists every stage."""
    cfg = st.get("config", {})
    device = cfg.get("device", "unknown")
    stages = []
    try:
        stages = json.loads(parent.get("training_lineage", "[]"))
    except ValueError:
        pass
    p_steps = int(parent.get("training_steps", 0) or 0)
    p_crops = int(parent.get("training_crops_seen", 0) or 0)
    hours = _hours_by_device(parent.get("training_hours", 0), "earlier stages")
    if not stages:
        stages = [{"result": parent.get("model_id", "?"), "steps": p_steps, "crops": p_crops,
                   "hours": round(sum(hours.values()), 3)}]
    own_steps, own_crops = int(st.get("step", 0)), int(st.get("crops_seen", 0))
    own_hours = st.get("train_seconds", 0.0) / 3600
    via = parent.get("via_checkpoint")
    if via:  # an intermediate run whose checkpoint this one started from
        stages.append({"from": parent.get("model_id", "?"), "device": via["device"], "steps": via["steps"],
                       "crops": via["crops"], "hours": via["hours"]})
        p_steps, p_crops = p_steps + via["steps"], p_crops + via["crops"]
        hours[via["device"]] = round(hours.get(via["device"], 0.0) + via["hours"], 3)
    stages.append({"from": parent.get("model_id", "?") if not via else "checkpoint", "device": device,
                   "steps": own_steps, "crops": own_crops, "hours": round(own_hours, 3),
                   "batch": cfg.get("batch"), "crop": cfg.get("crop"), "lr": cfg.get("lr")})
    hours[device] = round(hours.get(device, 0.0) + own_hours, 3)
    return {
        "training_steps": p_steps + own_steps,
        "training_crops_seen": p_crops + own_crops,
        "training_hours": hours,
        "training_lineage": stages,
        "training_parent": parent.get("model_id", "?"),
    }


def export_checkpoint(ckpt_path, out_path, register_in: Optional[Path] = None,
                      extra_meta: Optional[Dict] = None, use_ema: Optional[bool] = None) -> Dict:
    """Write a checkpoint's model as release weights ``out_path`` (and add them to the manifest of
    ``register_in`` as its default).  Nothing is written when a manifest there cannot be used
    (WeightsError) or registers ``out_path``'s name for another model (WeightsConflict)."""
    from .weights import WeightsError, check_replace, entry_of, pack, read_manifest, register, write_weights

    out_path = Path(out_path)
    if register_in is not None and (Path(register_in) / "manifest.json").exists():
        read_manifest(register_in)  # a damaged manifest is reported before the checkpoint is even read
    model, st = load_checkpoint_model(ckpt_path, use_ema=use_ema)
    meta = {
        "training_steps": st.get("step", 0),
        "training_crops_seen": st.get("crops_seen", 0),
        "training_hours": round(st.get("train_seconds", 0.0) / 3600, 3),
        "training_config": st.get("config", {}),
        "training_weights": st["exported_weights"],
    }
    if st.get("parent"):
        meta.update(lineage(st["parent"], st))
    meta.update(extra_meta or {})
    blob, model_id = pack(model, extra_meta=meta)
    entry = entry_of(blob, model_id, out_path)
    # the manifest next to the file resolves its name; the one registered into must be usable
    if register_in is None or Path(register_in).resolve() != out_path.parent.resolve():
        check_replace(entry, out_path.parent, registering=False)
    if register_in is not None:
        check_replace(entry, register_in, registering=True)
    existed = out_path.exists()
    try:
        entry = write_weights(blob, model_id, out_path)
    except OSError as e:  # a full disk, a read-only folder: the output's problem, not the checkpoint's
        raise WeightsError(f"{out_path}: cannot write ({e.strerror or e})") from None
    if register_in is not None:
        try:
            register(entry, register_in)
        except BaseException:
            if not existed:  # no weights file left behind that no manifest names
                out_path.unlink(missing_ok=True)
            raise
    return entry


def main(argv=None) -> int:
    from ._argparse import OneLineParser

    p = OneLineParser(prog="python -m aecodec.export", description=__doc__)
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--weights", choices=list(WEIGHTS), default="auto",
                   help="moving average or raw weights (auto: what best.pt's validation preferred, else the average)")
    p.add_argument("--register", action="store_true", help="add to the manifest next to OUT as the default")
    a = p.parse_args(argv)
    out = Path(a.out)
    from .weights import WeightsConflict, WeightsError

    try:
        entry = export_checkpoint(a.ckpt, out, register_in=out.parent if a.register else None,
                                  use_ema=WEIGHTS[a.weights])
    except WeightsConflict as e:
        p.error(str(e))
    except WeightsError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    from ._argparse import run_main

    raise SystemExit(run_main(main, prog="python -m aecodec.export"))
