"""Release weights: safetensors files with baked CDF tables, found through
``weights/manifest.json`` and verified by sha256 before anything is parsed.

A model identifier names one exact set of weights: it is the architecture name
plus the first 12 hex digits of a sha256 over the tensors, so two different
trainings can never share an identifier and a file is never decoded with weights
other than the ones that encoded it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional

from .format import AecodecError, FormatError

ARCH = "gained-mean-scale-hyperprior"  # the shipped architecture
# Buffers that hold the entropy coder's tables: computed once at export, stored,
# never rebuilt at decode time.
TABLE_SUFFIXES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


class WeightsError(AecodecError, RuntimeError):
    """A weights file is missing, corrupted or does not match its manifest entry."""


def weights_dir() -> Path:
    env = os.environ.get("AECODEC_WEIGHTS_DIR")
    if env:
        return Path(env)
    import aecodec.release_weights as w  # the weights/ folder, installed as package data

    return Path(next(iter(w.__path__)))


class WeightsConflict(WeightsError):
    """Writing a weights file would replace one that a manifest registers for another model
    (the files made with that model would stop decoding): a usage problem, not bad data."""


def _shipped(d: Path) -> bool:
    """Whether ``d`` is the weights folder installed with aecodec (not AECODEC_WEIGHTS_DIR)."""
    if os.environ.get("AECODEC_WEIGHTS_DIR"):
        return False
    try:
        return d.resolve() == weights_dir().resolve()
    except OSError:
        return False


def _remedy(d: Path) -> str:
    """What to do about a damaged weights folder ``d``: only the shipped one is reinstalled."""
    if _shipped(d):
        return "reinstall aecodec"
    if os.environ.get("AECODEC_WEIGHTS_DIR") and d == weights_dir():
        return "fix it, or unset AECODEC_WEIGHTS_DIR"
    return "fix it, or use another folder"


def _shape_problem(manifest) -> Optional[str]:
    """What is wrong with the shape of a parsed manifest, or None: an object with a ``models``
    object (model id -> {file, sha256}), a ``default`` that names one of them (null before the
    first registration) and, optionally, a ``retired`` object of the same entries."""

    def kind(v) -> str:
        return {dict: "an object", list: "a list", str: "a string", type(None): "null",
                bool: "a boolean"}.get(type(v), "a number")

    if not isinstance(manifest, dict):
        return f"it is {kind(manifest)}, not an object"
    for section in ("models", "retired"):
        if section not in manifest:
            if section == "models":
                return 'it has no "models" object'
            continue
        entries = manifest[section]
        if not isinstance(entries, dict):
            return f'its "{section}" is {kind(entries)}, not an object'
        for mid, e in entries.items():
            if not isinstance(e, dict):
                return f'its "{section}" entry {mid!r} is {kind(e)}, not an object'
            for key in ("file", "sha256"):
                if not isinstance(e.get(key), str) or not e[key]:
                    return f'its "{section}" entry {mid!r} has no "{key}" string'
            if Path(e["file"]).name != e["file"] or e["file"] in (".", ".."):
                return f'its "{section}" entry {mid!r} names {e["file"]!r}, not a file in its folder'
    if "default" not in manifest:
        return 'it has no "default" entry'
    default = manifest["default"]
    if default is not None and (not isinstance(default, str) or default not in manifest["models"]):
        return f'its "default" {default!r} is not one of its "models"'
    return None


def _load_manifest(path: Path) -> Dict:
    """The manifest at ``path``, checked; FileNotFoundError when there is none."""
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise WeightsError(f"unreadable weights manifest {path}: {getattr(e, 'strerror', None) or e}; "
                           f"{_remedy(path.parent)}") from None
    problem = _shape_problem(manifest)
    if problem:
        raise WeightsError(f"weights manifest {path} is damaged: {problem}; {_remedy(path.parent)}")
    return manifest


def read_manifest(directory: Optional[Path] = None) -> Dict:
    """The manifest of ``directory`` (default: the weights folder), checked: a WeightsError
    naming the file says what is wrong with one that cannot be used."""
    d = Path(directory) if directory else weights_dir()
    path = d / "manifest.json"
    try:
        return _load_manifest(path)
    except FileNotFoundError:
        if directory is None and os.environ.get("AECODEC_WEIGHTS_DIR"):
            raise WeightsError(f"no weights manifest at {path} (AECODEC_WEIGHTS_DIR): export into that folder "
                               "with `aecodec export CKPT DIR/NAME.safetensors --register`, or unset it") from None
        raise WeightsError(f"no weights manifest at {path}; reinstall aecodec") from None


def _default(manifest: Dict) -> str:
    if manifest["default"] is None:
        raise WeightsError(f"the weights manifest in {weights_dir()} names no default model yet: export one "
                           "into that folder with `aecodec export CKPT DIR/NAME.safetensors --register`")
    return manifest["default"]


def default_model_id() -> str:
    return _default(read_manifest())


def tensors_digest(state: Dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def load_state_dict_file(path, expected_sha256: Optional[str] = None, remedy: str = "reinstall aecodec"):
    """Load a safetensors file (no pickle) into float32 tensors, checking its hash first
    (``remedy`` ends the message when it does not match)."""
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read weights {path}: {e.strerror}") from None
    if expected_sha256 is not None:
        got = hashlib.sha256(blob).hexdigest()
        if got != expected_sha256:
            raise WeightsError(f"weights file {path.name} is corrupted or was replaced "
                               f"(sha256 {got[:12]}..., expected {expected_sha256[:12]}...); {remedy}")
    try:
        state = st_load(blob)
    except Exception as e:
        raise WeightsError(f"weights file {path.name} is not valid safetensors: {e}") from None
    import torch

    return {k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v) for k, v in state.items()}


def read_metadata(path) -> Dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return meta


def build_model(meta: Dict, state: Dict):
    from .model import ARCHITECTURES

    cls = ARCHITECTURES.get(meta.get("architecture"))
    if cls is None:
        raise WeightsError(f"unknown architecture {meta.get('architecture')!r}")
    model = cls(N=int(meta["N"]), M=int(meta["M"]), lambdas=json.loads(meta["lambdas"]))
    model.float()  # float32 whatever the caller's torch.set_default_dtype
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


_lock = threading.Lock()
_cache: Dict[str, object] = {}


def model_problem(model_id: str, manifest: Optional[Dict] = None) -> Optional[str]:
    """Why files made with ``model_id`` cannot be decoded here ("was made with model ...",
    completing "the file ..."), or None when they can.  Reads the manifest only."""
    manifest = manifest if manifest is not None else read_manifest()
    if model_id in manifest.get("models", {}):
        return None
    retired = manifest.get("retired", {}).get(model_id)
    if retired is not None:
        # an earlier release: decodable when its weights file is put back next to the manifest
        if (weights_dir() / retired["file"]).exists():
            return None
        return (f"was made with model {model_id!r}, retired after aecodec commit "
                f"{retired.get('last_commit', '?')}: decode it with that version, or put "
                f"{retired['file']} (sha256 {retired['sha256'][:12]}...) into {weights_dir()}")
    hint = "" if os.environ.get("AECODEC_WEIGHTS_DIR") else (
        "; if it was made with weights you exported, set AECODEC_WEIGHTS_DIR to their folder")
    return (f"needs model {model_id!r}, which this aecodec does not have "
            f"(known: {', '.join(sorted(manifest.get('models', {}))) or 'none'}){hint}")


def header_metadata(path) -> Optional[Dict]:
    """The metadata of a .safetensors file from its JSON header alone (no torch, no tensor
    read), or None when the file cannot be read as one."""
    import struct

    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100_000_000:
                return None
            meta = json.loads(f.read(n)).get("__metadata__")
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError, struct.error, AttributeError):
        return None


def model_qualities(model_id: str, manifest: Optional[Dict] = None) -> Optional[List[int]]:
    """The quality levels of an installed model, from its weights file's header alone;
    None where the file or its record is not there."""
    manifest = manifest if manifest is not None else read_manifest()
    entry = manifest.get("models", {}).get(model_id) or manifest.get("retired", {}).get(model_id)
    try:
        meta = header_metadata(weights_dir() / entry["file"])
        return [int(q) for q in json.loads(meta["qualities"])]
    except (TypeError, KeyError, ValueError):
        return None


def loaded_models() -> int:
    """How many models this process has loaded (the command line's timings say when one was loaded)."""
    return len(_cache)


def _one_thread_after_fork() -> None:
    torch = sys.modules.get("torch")  # (never import in a fork handler)
    if torch is not None:
        try:
            torch.set_num_threads(1)
        except Exception:  # never let the hook break a fork
            pass


_fork_hook: List[bool] = []


def _install_fork_hook() -> None:
    """A child forked from a process whose torch has run (OpenMP's thread pool started) hangs
    on its first parallel operation (multiprocessing's fork pools, gunicorn --preload): the
    child's torch runs on one thread instead."""
    if not _fork_hook and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_one_thread_after_fork)
        _fork_hook.append(True)


def load_model(model_id: Optional[str] = None):
    """The model for ``model_id`` (default: the current release), loaded once per process."""
    manifest = read_manifest()
    model_id = model_id or _default(manifest)
    with _lock:
        if model_id in _cache:
            return _cache[model_id]
        entry = manifest.get("models", {}).get(model_id)
        retired = manifest.get("retired", {}).get(model_id)
        problem = model_problem(model_id, manifest)
        if problem:
            raise FormatError(f"the file {problem}")
        entry = entry or retired  # an earlier release whose weights file was put back
        d = weights_dir()
        path = d / entry["file"]
        # a folder of the user's (AECODEC_WEIGHTS_DIR): reinstalling aecodec would not help
        remedy = "reinstall aecodec" if _shipped(d) else (
            f"{d / 'manifest.json'} registers it for model {model_id}: put that file back, or export the "
            "model's checkpoint to it again")
        if not path.exists():
            raise WeightsError(f"weights file {path} is missing; {remedy}")
        state = load_state_dict_file(path, entry["sha256"], remedy=remedy)
        meta = read_metadata(path)
        if meta.get("model_id") != model_id:
            raise WeightsError(f"weights file {path.name} holds model {meta.get('model_id')!r}, "
                               f"manifest says {model_id!r}")
        model = build_model(meta, state)
        _install_fork_hook()  # torch has run now
        model.model_id = model_id
        model.meta = meta
        _cache[model_id] = model
        return model


def pack(model, extra_meta: Optional[Dict] = None, half: bool = True):
    """Release weights as bytes, and their model id: CDF tables built once and stored; conv
    kernels in float16 (halves the file; the shipped model *is* the rounded one)."""
    import torch
    from safetensors.torch import save

    from .format import FORMAT_VERSION

    model.update(force=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point() and v.ndim == 4 and k.endswith("weight"):
            v = v.to(torch.float16)
        state[k] = v
    digest = tensors_digest(state)
    model_id = f"{model.short_name}-{model.N}x{model.M}-{digest[:12]}"
    meta = {
        "architecture": model.arch,
        "model_id": model_id,
        "N": str(model.N),
        "M": str(model.M),
        "lambdas": json.dumps(list(model.lambdas)),
        "qualities": json.dumps(list(range(1, model.levels + 1))),
        "format_version": str(FORMAT_VERSION),
        "tensors_sha256": digest,
    }
    for k, v in (extra_meta or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return sorted_header(save(state, metadata=meta)), model_id


def sorted_header(blob: bytes) -> bytes:
    """safetensors writes its JSON header in hash order: the same weights and metadata gave other
    bytes (another sha256) at each export.  The header with sorted keys, padded to 8 bytes as
    safetensors pads it; the tensors' offsets count from its end, so they stay as they are."""
    import struct

    n = struct.unpack("<Q", blob[:8])[0]
    text = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def write_weights(blob: bytes, model_id: str, out_path) -> Dict:
    """Write packed weights atomically (a temporary file, then a rename); their manifest entry."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return entry_of(blob, model_id, out_path)


def entry_of(blob: bytes, model_id: str, out_path) -> Dict:
    return {"model_id": model_id, "file": Path(out_path).name, "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob)}


def export(model, out_path, extra_meta: Optional[Dict] = None, half: bool = True) -> Dict:
    """Write release weights (see ``pack``); their manifest entry."""
    blob, model_id = pack(model, extra_meta, half)
    return write_weights(blob, model_id, out_path)


def check_replace(entry: Dict, directory, registering: bool) -> None:
    """Refuse (WeightsConflict), before anything is written, to put ``entry``'s file into
    ``directory`` where the manifest there registers that file name for another model (or, when
    not ``registering``, for this model with other bytes): the files made with it would stop
    decoding.  With ``registering``, a manifest there that cannot be used is a WeightsError;
    without, it is no concern (nothing can load weights through it)."""
    d = Path(directory)
    path = d / "manifest.json"
    try:
        manifest = _load_manifest(path)
    except FileNotFoundError:
        return
    except WeightsError:
        if registering:
            raise
        return
    for section in ("models", "retired"):
        for mid, e in manifest.get(section, {}).items():
            if e["file"] != entry["file"]:
                continue
            if mid != entry["model_id"]:
                what = "model" if section == "models" else "retired model"
                raise WeightsConflict(
                    f"{d / entry['file']} is the weights file that {path} names for {what} {mid}: replacing "
                    f"it would stop every file made with {mid} from decoding; export under another name")
            if not registering and e["sha256"] != entry["sha256"]:
                raise WeightsConflict(
                    f"{d / entry['file']} is registered in {path} for model {mid} with other bytes (sha256 "
                    f"{e['sha256'][:12]}...): register the new file with it (--register), or export under "
                    "another name")


def register(entry: Dict, directory: Optional[Path] = None, make_default: bool = True) -> None:
    """Add an exported file to the manifest (old entries stay: old files keep decoding)."""
    d = Path(directory) if directory else weights_dir()
    path = d / "manifest.json"
    try:
        manifest = _load_manifest(path)
    except FileNotFoundError:
        manifest = {"default": None, "models": {}}
    manifest["models"][entry["model_id"]] = {"file": entry["file"], "sha256": entry["sha256"]}
    if make_default or not manifest.get("default"):
        manifest["default"] = entry["model_id"]
    tmp = path.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def retire(model_id: str, last_commit: str, directory: Optional[Path] = None) -> None:
    """Move a model from the manifest's releases to its retired list.

    Its weights file may then leave the package: files made with it are refused
    with a message that names the last aecodec commit that shipped it, and they
    decode again as soon as the weights file is put back next to the manifest.
    """
    d = Path(directory) if directory else weights_dir()
    path = d / "manifest.json"
    manifest = read_manifest(d)
    if manifest.get("default") == model_id:
        raise ValueError(f"{model_id} is the default model; register its successor first")
    entry = manifest["models"].pop(model_id)
    manifest.setdefault("retired", {})[model_id] = {**entry, "last_commit": last_commit}
    tmp = path.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
