"""tools/release.py: staging and shipping a weights release."""

import subprocess
import sys

import pytest
from conftest import ROOT, load_tool, shipped_weights_file

release = load_tool("release")


def _shipped():
    from aecodec.weights import default_model_id

    return shipped_weights_file(), default_model_id()


@pytest.fixture(scope="module")
def new_weights(tmp_path_factory):
    """Release weights other than the shipped ones: the shipped model, one gain nudged, re-exported."""
    import torch

    from aecodec.weights import build_model, export, load_state_dict_file, read_metadata

    path, _ = _shipped()
    meta = read_metadata(path)
    model = build_model(meta, load_state_dict_file(path))
    with torch.no_grad():
        model.log_gain[0, 0] += 0.01
    out = tmp_path_factory.mktemp("new") / "new.safetensors"
    extra = {k: v for k, v in meta.items() if k.startswith("training_")}
    entry = export(model, out, extra_meta=extra)
    return out, entry["model_id"]


def test_check_accepts_release_files_and_refuses_others(new_weights, tmp_path):
    path, model_id = new_weights
    assert release.check(path)["model_id"] == model_id
    (tmp_path / "x.safetensors").write_bytes(b"not weights")
    with pytest.raises(release.ReleaseError, match="not aecodec weights"):
        release.check(tmp_path / "x.safetensors")
    with pytest.raises(release.ReleaseError, match="no such file"):
        release.check(tmp_path / "missing.safetensors")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "release.py"), "check", str(ROOT / "README.md")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_a_file_whose_id_does_not_match_its_tensors_is_refused(new_weights, tmp_path):
    from safetensors.torch import load, save

    from aecodec.weights import read_metadata

    path, _ = new_weights
    state = load(path.read_bytes())
    state["log_gain"] = state["log_gain"] + 0.5  # tampered after export
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(save(state, metadata=read_metadata(path)))
    with pytest.raises(release.ReleaseError, match="does not match its tensors"):
        release.check(bad)


def test_stage_then_ship_into_a_copy_of_the_weights_folder(new_weights, tmp_path, monkeypatch):
    import shutil

    from aecodec.weights import read_manifest

    path, model_id = new_weights
    staged = tmp_path / "staged"
    release.stage(path, staged)
    assert read_manifest(staged)["default"] == model_id and (staged / f"{model_id}.safetensors").exists()

    shipped, old_id = _shipped()
    w = tmp_path / "weights"
    w.mkdir()
    shutil.copyfile(shipped, w / shipped.name)
    shutil.copyfile(shipped.parent / "manifest.json", w / "manifest.json")
    monkeypatch.setattr(release, "CACHE", tmp_path / "cache")
    entry = release.ship(path, weights=w, git=False)
    m = read_manifest(w)
    assert m["default"] == model_id and model_id in m["models"]
    assert m["retired"][old_id]["last_commit"] == "unknown" and old_id not in m["models"]
    assert not (w / shipped.name).exists() and (tmp_path / "cache" / shipped.name).exists()
    assert entry["retired"]["model_id"] == old_id
    with pytest.raises(release.ReleaseError, match="already the default"):
        release.ship(path, weights=w, git=False)


def test_stage_refuses_a_file_or_a_foreign_manifest_before_copying(new_weights, tmp_path):
    path, model_id = new_weights
    (tmp_path / "file").write_text("x")
    with pytest.raises(release.ReleaseError, match="is a file"):
        release.stage(path, tmp_path / "file")
    for text in ('{"mine": 1}', "{not json"):
        d = tmp_path / f"d{len(text)}"
        d.mkdir()
        (d / "manifest.json").write_text(text)
        with pytest.raises(release.ReleaseError, match="manifest"):
            release.stage(path, d)
        assert [p.name for p in d.iterdir()] == ["manifest.json"]  # nothing copied in
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "release.py")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "check,stage,ship" in r.stderr


def test_annotate_sets_fields_on_the_last_stage_and_keeps_the_model(new_weights, tmp_path):
    import json

    from aecodec.weights import read_metadata

    path, model_id = new_weights
    out = tmp_path / "annotated.safetensors"
    entry = release.annotate(path, out, ['schedule=lr 4e-4 constant 5,339 steps', "lr=0.0004", "weights=raw"])
    assert entry["model_id"] == model_id  # a digest of the tensors, which are untouched
    last = json.loads(read_metadata(out)["training_lineage"])[-1]
    assert last["schedule"] == "lr 4e-4 constant 5,339 steps" and last["lr"] == 0.0004 and last["weights"] == "raw"
    before = json.loads(read_metadata(path)["training_lineage"])
    assert json.loads(read_metadata(out)["training_lineage"])[:-1] == before[:-1]
    again = tmp_path / "again.safetensors"  # the same input gives the same bytes (safetensors' header order is not)
    release.annotate(path, again, ['schedule=lr 4e-4 constant 5,339 steps', "lr=0.0004", "weights=raw"])
    assert again.read_bytes() == out.read_bytes()
    with pytest.raises(release.ReleaseError, match="KEY=VALUE"):
        release.annotate(path, tmp_path / "b.safetensors", ["no-equals-sign"])
    with pytest.raises(release.ReleaseError, match="another name"):
        release.annotate(path, path, ["a=1"])
    with pytest.raises(release.ReleaseError, match="no such folder"):
        release.annotate(path, tmp_path / "missing" / "c.safetensors", ["a=1"])
    assert not (tmp_path / "b.safetensors").exists()
