"""Release weights: a retired model's files are refused with directions, and decode when its weights return."""

import shutil

import numpy as np
import pytest

import aecodec
from aecodec import weights as W
from aecodec.model import GainedMeanScaleHyperprior


@pytest.fixture
def two_releases(tmp_path, monkeypatch):
    import torch

    d = tmp_path / "weights"
    entries = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = GainedMeanScaleHyperprior(N=16, M=24).eval()
        e = W.export(m, d / f"m{seed}.safetensors")
        W.register(e, d)
        entries.append(e)
    monkeypatch.setenv("AECODEC_WEIGHTS_DIR", str(d))
    monkeypatch.setattr(W, "_cache", {})
    return d, entries


def test_a_retired_model_is_refused_with_directions_then_decodes_when_put_back(two_releases, tmp_path, monkeypatch):
    d, (old, new) = two_releases
    img = (np.arange(20 * 30 * 3) % 253).astype(np.uint8).reshape(20, 30, 3)
    W.register(old, d)  # the API compresses with the default: make the old model the default for one file
    data = aecodec.compress(img, quality=3)
    W.register(new, d)
    monkeypatch.setattr(W, "_cache", {})
    assert aecodec.info(data)["model"] == old["model_id"]

    with pytest.raises(ValueError):
        W.retire(new["model_id"], "abc1234", d)  # the default cannot be retired
    W.retire(old["model_id"], "abc1234", d)
    manifest = W.read_manifest(d)
    assert old["model_id"] in manifest["retired"] and old["model_id"] not in manifest["models"]

    monkeypatch.setattr(W, "_cache", {})
    assert aecodec.decompress(data).size == (30, 20)  # the file is still there: decodes

    shutil.move(d / old["file"], tmp_path / old["file"])
    monkeypatch.setattr(W, "_cache", {})
    with pytest.raises(aecodec.FormatError, match="retired after aecodec commit abc1234"):
        aecodec.decompress(data)
    # info reads the header alone, and still says the file cannot be decoded here
    i = aecodec.info(data)
    assert i["decodable"] is False and "retired after aecodec commit abc1234" in i["model_problem"]
    from click.testing import CliRunner

    from aecodec.cli import main

    (tmp_path / "old.aec").write_bytes(data)
    r = CliRunner().invoke(main, ["info", str(tmp_path / "old.aec")])
    assert r.exit_code == 0 and "cannot be decoded here: the file was made with model" in r.output, r.output

    shutil.move(tmp_path / old["file"], d / old["file"])
    monkeypatch.setattr(W, "_cache", {})
    assert aecodec.decompress(data).size == (30, 20)
    assert aecodec.info(data)["decodable"] is True and "model_problem" not in aecodec.info(data)


def test_a_wheel_carries_every_file_the_weights_folder_needs():
    """A non-editable install (pip install .) gets what setuptools' package-data lists: the
    manifest and every registered weights file must match it (the manifest once did not)."""
    import fnmatch
    import json
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder = root / cfg["package-dir"]["aecodec.release_weights"]
    patterns = cfg["package-data"]["aecodec.release_weights"]
    manifest = json.loads((folder / "manifest.json").read_text())
    needed = ["manifest.json", "README.md"] + [m["file"] for m in manifest["models"].values()]
    for name in needed:
        assert (folder / name).exists(), name
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} would be missing from a wheel"
