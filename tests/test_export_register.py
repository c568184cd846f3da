"""``aecodec export`` into a folder with a manifest: a damaged manifest is named before anything is
written, and a weights file that a manifest names for another model is never replaced (-f or not)."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from aecodec import weights as W
from aecodec.cli import main

from test_train import _trainer, data_dir  # noqa: F401  (data_dir: the fixture of tiny training crops)


@pytest.fixture(scope="module")
def ckpt(data_dir, tmp_path_factory):  # noqa: F811
    tr = _trainer(data_dir, tmp_path_factory.mktemp("run"))
    tr.train_step()
    return tr.save()


@pytest.fixture()
def fresh(monkeypatch):
    """Models loaded by earlier tests are forgotten; AECODEC_WEIGHTS_DIR is set per test."""
    monkeypatch.setattr(W, "_cache", {})
    monkeypatch.delenv("AECODEC_WEIGHTS_DIR", raising=False)
    return monkeypatch


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, prog_name="aecodec")


def one_line(r):
    return r.stderr.count("\n") == 1 and "Traceback" not in r.output


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


BAD = {
    "truncated": '{"default": ',
    "empty": "{}",
    "no models": '{"default": "x"}',
    "models a list": '{"models": []}',
    "not an object": "[]",
    "default unknown": '{"default": "x", "models": {}}',
    "entry without file": '{"default": null, "models": {"m": {"sha256": "00"}}}',
    "retired a list": '{"default": null, "models": {}, "retired": []}',
}


@pytest.mark.parametrize("text", BAD.values(), ids=list(BAD))
def test_a_damaged_manifest_is_named_before_anything_is_written(ckpt, tmp_path, fresh, text):
    d = tmp_path / "w"
    d.mkdir()
    (d / "manifest.json").write_text(text)
    for _ in range(2):  # and again: no "exists; use -f" from a weights file left by the first try
        r = run("export", ckpt, d / "w.safetensors", "--register")
        assert r.exit_code == 1 and one_line(r), r.output
        assert str(d / "manifest.json") in r.stderr and "checkpoint" not in r.stderr, r.stderr
        assert snapshot(d) == {"manifest.json": text.encode()}
    with pytest.raises(W.WeightsError, match="manifest"):
        W.read_manifest(d)
    # every reader of the manifest says the same, in one line, instead of KeyError / TypeError
    Image.new("RGB", (32, 24), "gray").save(tmp_path / "x.png")
    fresh.setenv("AECODEC_WEIGHTS_DIR", str(d))
    r = run("compress", tmp_path / "x.png", "-o", tmp_path / "x.aec")
    assert r.exit_code == 1 and one_line(r) and str(d / "manifest.json") in r.stderr, r.stderr
    assert "internal error" not in r.stderr and not (tmp_path / "x.aec").exists()


def test_a_damaged_manifest_does_not_stop_an_export_that_does_not_register(ckpt, tmp_path, fresh):
    """Nothing can load weights through it, so nothing could break: the export goes on, the manifest stays."""
    d = tmp_path / "w"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    r = run("export", ckpt, d / "w.safetensors")
    assert r.exit_code == 0, r.output
    assert (d / "manifest.json").read_text() == "{}" and (d / "w.safetensors").exists()


def test_a_null_default_is_a_manifest_before_its_first_model(ckpt, tmp_path, fresh):
    d = tmp_path / "w"
    d.mkdir()
    (d / "manifest.json").write_text('{"default": null, "models": {}}')
    Image.new("RGB", (32, 24), "gray").save(tmp_path / "x.png")
    fresh.setenv("AECODEC_WEIGHTS_DIR", str(d))
    r = run("compress", tmp_path / "x.png", "-o", tmp_path / "x.aec")
    assert r.exit_code == 1 and one_line(r) and "no default model" in r.stderr, r.stderr
    r = run("export", ckpt, d / "w.safetensors", "--register")
    assert r.exit_code == 0, r.output
    assert W.read_manifest(d)["default"] == json.loads(r.stdout)["model_id"]


@pytest.fixture()
def registered(ckpt, tmp_path, fresh):
    """A folder whose manifest registers w.safetensors (the moving average), and a file made with it."""
    d = tmp_path / "w"
    d.mkdir()
    r = run("export", ckpt, d / "w.safetensors", "--register", "--weights", "ema")
    assert r.exit_code == 0, r.output
    Image.new("RGB", (40, 32), "teal").save(tmp_path / "x.png")
    fresh.setenv("AECODEC_WEIGHTS_DIR", str(d))
    assert run("compress", tmp_path / "x.png", "-o", tmp_path / "x.aec").exit_code == 0
    return d, json.loads(r.stdout)["model_id"]


@pytest.mark.parametrize("register", [True, False])
def test_force_does_not_replace_the_weights_of_another_registered_model(ckpt, tmp_path, registered, register):
    d, old_id = registered
    before = snapshot(d)
    for force in ("-f", None):
        args = ["export", ckpt, d / "w.safetensors", "--weights", "raw"]  # the raw weights: another model
        args += [a for a in (force, "--register" if register else None) if a]
        r = run(*args)
        assert r.exit_code == 2 and one_line(r), r.output
        if force:
            assert str(d / "manifest.json") in r.stderr and old_id in r.stderr and "another name" in r.stderr
        assert snapshot(d) == before  # weights and manifest byte-identical
    r = run("decompress", tmp_path / "x.aec", "-o", tmp_path / "x2.png")
    assert r.exit_code == 0, r.output
    # under another name it goes in, and the files made with either model decode
    r = run("export", ckpt, d / "raw.safetensors", "--weights", "raw", "--register")
    assert r.exit_code == 0, r.output
    W._cache.clear()
    assert run("decompress", tmp_path / "x.aec", "-o", tmp_path / "x3.png").exit_code == 0
    assert run("compress", tmp_path / "x.png", "-o", tmp_path / "y.aec").exit_code == 0
    assert run("decompress", tmp_path / "y.aec", "-o", tmp_path / "y.png").exit_code == 0


def test_the_same_model_may_be_exported_over_its_own_file(ckpt, tmp_path, registered):
    d, old_id = registered
    before = snapshot(d)
    for extra in ((), ("--register",)):  # an export of the same checkpoint gives the same bytes
        r = run("export", ckpt, d / "w.safetensors", "--weights", "ema", "-f", *extra)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["model_id"] == old_id and snapshot(d) == before
    assert run("decompress", tmp_path / "x.aec", "-o", tmp_path / "x2.png").exit_code == 0


def test_same_model_other_bytes_and_retired_names(ckpt, tmp_path, fresh):
    """The library's check: the same model with other metadata needs its entry updated (registering);
    a retired model's file name is kept for it even while the file is away."""
    import shutil

    from aecodec.export import export_checkpoint

    d = tmp_path / "w"
    a = export_checkpoint(ckpt, d / "a.safetensors", register_in=d, use_ema=True)
    with pytest.raises(W.WeightsConflict, match="other bytes"):
        export_checkpoint(ckpt, d / "a.safetensors", extra_meta={"note": "x"}, use_ema=True)
    b = export_checkpoint(ckpt, d / "a.safetensors", register_in=d, extra_meta={"note": "x"}, use_ema=True)
    assert b["model_id"] == a["model_id"] and W.read_manifest(d)["models"][a["model_id"]]["sha256"] == b["sha256"]

    c = export_checkpoint(ckpt, d / "c.safetensors", register_in=d, use_ema=False)
    W.retire(a["model_id"], "abc1234", d)
    shutil.move(d / "a.safetensors", tmp_path / "a.safetensors")  # a retired model's weights may leave
    before = snapshot(d)
    with pytest.raises(W.WeightsConflict, match=f"retired model {a['model_id']}"):
        export_checkpoint(ckpt, d / "a.safetensors", register_in=d, use_ema=False)
    assert snapshot(d) == before and c["model_id"] != a["model_id"]


@pytest.mark.parametrize("damage", ["replaced", "missing"])
def test_damaged_weights_in_a_users_folder_name_the_manifest_not_a_reinstall(ckpt, tmp_path, registered, damage):
    d, old_id = registered
    if damage == "replaced":  # another model's file under the registered name
        r = run("export", ckpt, tmp_path / "other.safetensors", "--weights", "raw")
        assert r.exit_code == 0, r.output
        (d / "w.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes())
    else:
        (d / "w.safetensors").unlink()
    W._cache.clear()  # the fixture's compress loaded the model in this process
    r = run("decompress", tmp_path / "x.aec", "-o", tmp_path / "x2.png")
    assert r.exit_code == 1 and one_line(r), r.output
    assert "reinstall" not in r.stderr and str(d / "manifest.json") in r.stderr and old_id in r.stderr, r.stderr
    assert ("corrupted or was replaced" if damage == "replaced" else "missing") in r.stderr
    assert not (tmp_path / "x2.png").exists()


def test_a_failed_write_is_the_output_s_problem_not_the_checkpoint_s(ckpt, tmp_path, fresh):
    import errno

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    fresh.setattr(W, "write_weights", full_disk)
    r = run("export", ckpt, tmp_path / "w.safetensors")
    assert r.exit_code == 1 and one_line(r), r.output
    assert "cannot write (No space left on device)" in r.stderr and "checkpoint" not in r.stderr, r.stderr
