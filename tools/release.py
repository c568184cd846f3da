"""Stage and ship a weights release (docs/RELEASE.md has the whole procedure).

    python tools/release.py check NEW.safetensors        # is it a sound release file?
    python tools/release.py stage NEW.safetensors DIR    # a weights folder to benchmark it from:
        AECODEC_WEIGHTS_DIR=DIR aecodec bench ../shared/data/kodak -o /tmp/bk/kodak
    python tools/release.py ship NEW.safetensors         # into weights/: the new default
    python tools/release.py annotate NEW.safetensors OUT.safetensors schedule="lr 2e-4 ..." weights=raw
        # what the last stage of training_lineage cannot know by itself (a schedule run in several
        # commands, which weights were chosen and why); the tensors and the model id are unchanged

`ship` copies the file into weights/ as MODEL_ID.safetensors, registers it as the default,
retires the previous default (its last commit: the current HEAD), keeps a copy of the retired
file in ~/.cache/aecodec/ and removes it from git (`git rm`). Nothing is committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 25 * 10**6  # the brief's limit for a committed weights file
CACHE = Path("~/.cache/aecodec").expanduser()


class ReleaseError(Exception):
    pass


def check(path: Path) -> dict:
    """The manifest entry of a release file, after checking that it is one."""
    from aecodec.weights import build_model, load_state_dict_file, read_metadata, tensors_digest

    path = Path(path)
    if not path.is_file():
        raise ReleaseError(f"no such file: {path}")
    blob = path.read_bytes()
    if len(blob) > MAX_BYTES:
        raise ReleaseError(f"{path} is {len(blob) / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.0f} MB a weights file may have")
    try:
        meta = read_metadata(path)
        state = load_state_dict_file(path)
        model = build_model(meta, state)
    except Exception as e:  # safetensors' own errors are not ValueErrors
        raise ReleaseError(f"{path} is not aecodec weights: {e}") from None
    model_id = meta.get("model_id", "")
    from safetensors.torch import load as st_load

    digest = tensors_digest(st_load(blob))  # as stored (float16 kernels), as export computed it
    if model_id != f"{model.short_name}-{model.N}x{model.M}-{digest[:12]}":
        raise ReleaseError(f"{path}: its model id {model_id!r} does not match its tensors (digest {digest[:12]})")
    if state.get("gaussian_conditional._quantized_cdf") is None or state["gaussian_conditional._quantized_cdf"].numel() == 0:
        raise ReleaseError(f"{path} has no CDF tables (export it with aecodec.export)")
    for k in ("training_steps", "training_crops_seen", "training_hours"):
        if k not in meta:
            raise ReleaseError(f"{path} lacks {k} in its metadata: the model card needs it")
    return {"model_id": model_id, "file": f"{model_id}.safetensors", "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob), "training_steps": int(meta["training_steps"])}


def _copy(src: Path, dst: Path) -> None:
    """Copy through a temporary name: an interrupted copy never leaves a partial weights file."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def stage(path: Path, directory: Path) -> dict:
    from aecodec.weights import WeightsError, read_manifest, register

    entry = check(path)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ReleaseError(f"{directory}: the staging folder is a file")
    if (directory / "manifest.json").exists():  # checked before anything is copied into the folder
        try:
            manifest = read_manifest(directory)
        except WeightsError as e:
            raise ReleaseError(str(e)) from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
            raise ReleaseError(f"{directory / 'manifest.json'} is not an aecodec weights manifest; "
                               "stage into a new folder")
    directory.mkdir(parents=True, exist_ok=True)
    _copy(path, directory / entry["file"])
    register(entry, directory)
    return entry


def ship(path: Path, weights: Path = ROOT / "weights", git: bool = True) -> dict:
    from aecodec.weights import read_manifest, register, retire

    entry = check(path)
    weights = Path(weights)
    old = read_manifest(weights).get("default")
    if old == entry["model_id"]:
        raise ReleaseError(f"{entry['model_id']} is already the default")
    _copy(path, weights / entry["file"])
    register(entry, weights)
    if old:
        head = "unknown"
        if git:
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=weights, capture_output=True,
                                  text=True, check=True).stdout.strip()
        old_file = weights / read_manifest(weights)["models"][old]["file"]
        retire(old, head, weights)
        if old_file.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            _copy(old_file, CACHE / old_file.name)
            if git:
                subprocess.run(["git", "rm", "-q", "--cached", str(old_file)], cwd=weights, check=True)
            old_file.unlink()
        entry["retired"] = {"model_id": old, "last_commit": head}
    if git:
        subprocess.run(["git", "add", str(weights / entry["file"]), str(weights / "manifest.json")], cwd=weights,
                       check=True)
    return entry


def annotate(path: Path, out: Path, fields: list) -> dict:
    """Copy a release file to ``out`` with KEY=VALUE ``fields`` set on the last entry of its
    ``training_lineage`` (VALUE as JSON when it parses, else as text)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from aecodec.weights import sorted_header

    check(path)
    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve():
        raise ReleaseError("write the annotated file under another name (the original stays as exported)")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    try:
        lineage = json.loads(meta.get("training_lineage", ""))
    except ValueError:
        lineage = None
    if not isinstance(lineage, list) or not lineage or not isinstance(lineage[-1], dict):
        raise ReleaseError(f"{path} has no training_lineage to annotate")
    for field in fields:
        key, sep, value = field.partition("=")
        if not sep or not key.strip():
            raise ReleaseError(f"{field!r}: fields are KEY=VALUE")
        try:
            lineage[-1][key.strip()] = json.loads(value)
        except ValueError:
            lineage[-1][key.strip()] = value
    meta["training_lineage"] = json.dumps(lineage)
    if not out.parent.is_dir():
        raise ReleaseError(f"{out}: no such folder {out.parent}")
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(sorted_header(save(load_file(str(path)), metadata=meta)))  # the same input, the same bytes
        os.replace(tmp, out)
    except Exception as e:  # safetensors' own errors are not OSErrors
        tmp.unlink(missing_ok=True)
        raise ReleaseError(f"could not write {out}: {e}") from None
    entry = check(out)
    entry["lineage_entry"] = lineage[-1]
    return entry


def main(argv=None) -> int:
    from aecodec._argparse import OneLineParser as Parser

    p = Parser(prog="python tools/release.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    sub.add_parser("check", help="check a release file").add_argument("file")
    s = sub.add_parser("stage", help="a weights folder with the file as its default, to benchmark")
    s.add_argument("file")
    s.add_argument("dir")
    sub.add_parser("ship", help="make the file the default in weights/ and retire the old one").add_argument("file")
    s = sub.add_parser("annotate", help="a copy with KEY=VALUE fields set on the last training_lineage stage")
    s.add_argument("file")
    s.add_argument("out")
    s.add_argument("fields", nargs="+", metavar="KEY=VALUE")
    sub.metavar = "{" + ",".join(sub.choices) + "}"  # named in the error when none is given
    a = p.parse_args(argv)
    try:
        if a.cmd == "check":
            entry = check(Path(a.file))
        elif a.cmd == "stage":
            entry = stage(Path(a.file), Path(a.dir))
        elif a.cmd == "annotate":
            entry = annotate(Path(a.file), Path(a.out), a.fields)
        else:
            entry = ship(Path(a.file))
    except ReleaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from aecodec._argparse import run_main

    sys.exit(run_main(main))
