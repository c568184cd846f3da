"""The training tool: it learns, it resumes bit-exactly, and its export decodes."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from aecodec.train import Trainer, build_parser


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, photo_crops):
    d = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(4):
        src = photo_crops[i % len(photo_crops)]
        t, l = rng.integers(0, 128, 2)
        Image.fromarray(src[t:t + 96, l:l + 96]).save(d / f"img{i}.png")
    return d


def _trainer(data_dir, run_dir, *extra):
    args = build_parser().parse_args([str(data_dir), "--run-dir", str(run_dir), "--N", "16", "--M", "24",
                                      "--crop", "64", "--batch", "4", "--warmup", "1", "--lr", "1e-3",
                                      "--val-crop", "64", "--threads", "1", "--quiet", *extra])
    return Trainer(args)


def _fixed_loss(tr, q=5):
    from aecodec.model import rd_loss

    x = torch.stack([torch.from_numpy(im[:64, :64].copy()).permute(2, 0, 1).float() / 255 for im in tr.val_imgs
                     + tr.sampler.images[:3]])
    tr.model.eval()
    with torch.no_grad():
        out = tr.model(x, q)
        loss = float(rd_loss(out, x, tr.lambdas[q].expand(x.shape[0]))["loss"])
    tr.model.train()
    return loss


def test_a_few_steps_lower_the_loss(data_dir, tmp_path):
    torch.manual_seed(0)
    tr = _trainer(data_dir, tmp_path / "run")
    before = _fixed_loss(tr)
    for _ in range(40):
        tr.train_step()
    after = _fixed_loss(tr)
    assert after < 0.8 * before, (before, after)


def test_resume_is_bit_exact(data_dir, tmp_path):
    a = _trainer(data_dir, tmp_path / "a")
    for _ in range(6):
        a.train_step()
    expected = a.train_step()["loss"]

    b = _trainer(data_dir, tmp_path / "b")
    for _ in range(6):
        b.train_step()
    b.save()
    # a run killed after its checkpoint logged steps that the resumed run redoes
    b.log({"kind": "train", "step": 6, "loss": 1.0})
    b.log({"kind": "train", "step": 8, "loss": 1.0})
    (b.run_dir / "log.jsonl").open("a").write('{"kind": "val", "st')
    del b
    c = _trainer(data_dir, tmp_path / "b")  # resumes from last.pt
    assert c.step == 6
    from aecodec.train import read_log

    assert [r["step"] for r in read_log(c.run_dir / "log.jsonl")["train"]] == [6]
    assert c.train_step()["loss"] == expected
    for (n, p), (_, q) in zip(a.model.named_parameters(), c.model.named_parameters()):
        assert torch.equal(p, q), n
    # the weights' moving average resumes exactly too
    assert a.ema.n == c.ema.n == 7
    for (n, p), (_, q) in zip(a.ema.model.state_dict().items(), c.ema.model.state_dict().items()):
        assert torch.equal(p, q), n


def test_clipping_ignores_the_auxiliary_gradient(data_dir, tmp_path):
    """--clip bounds the main parameters' gradient only.  Until session 11 it bounded the norm
    of every gradient, the quantiles' auxiliary one included, which an uninterrupted run
    carries over from the step before and a resumed process does not have: at the shipped
    weights that norm is ~840 against 1-7, so a resumed run's first step was ~15x larger than
    an uninterrupted run's (the GPU resume spikes of sessions 5 and 9).  Here: the same step
    with and without a (large) stale auxiliary gradient gives the same weights, bit for bit,
    with clipping active."""
    a = _trainer(data_dir, tmp_path / "a", "--clip", "0.001")
    a.train_step()
    a.save()
    steps = []
    for stale in (False, True):
        t = _trainer(data_dir, tmp_path / "a", "--clip", "0.001")
        assert t.step == 1
        if stale:
            for p in t.aux_opt.param_groups[0]["params"]:
                p.grad = torch.full_like(p, 1e6)
        t.train_step()
        steps.append({n: p.detach().clone() for n, p in t.model.named_parameters() if not n.endswith("quantiles")})
    for n in steps[0]:
        assert torch.equal(steps[0][n], steps[1][n]), n


def test_a_checkpoint_from_before_the_clipping_fix_continues_as_it_was(data_dir, tmp_path, monkeypatch):
    """A checkpoint whose clipping counted the aux gradient (no "clip_scope"): its Adam moments
    were built from gradients divided by that norm (the old --clip was 1.0), so on resume they
    are multiplied by it, and eps is set to the value that acted then: the run's next steps
    have the size the old code gave them, not up to ~10x more."""
    from aecodec import train as T

    # the tiny model's aux gradient (~0.7) is under the old clip of 1.0, which left it unscaled;
    # a smaller old clip makes the scaling (norm / clip) happen here, as it did at full size (~840)
    monkeypatch.setattr(T, "OLD_CLIP", 0.1)
    a = _trainer(data_dir, tmp_path / "a")
    for _ in range(3):
        a.train_step()
    path = a.save()
    st = torch.load(path, weights_only=False)
    ref = {k: (v["exp_avg"].clone(), v["exp_avg_sq"].clone()) for k, v in st["opt"]["state"].items()}
    del st["clip_scope"]
    torch.save(st, path)
    t = _trainer(data_dir, tmp_path / "a")
    q = t.aux_opt.param_groups[0]["params"]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in torch.autograd.grad(t.model.aux_loss(), q))))
    factor = norm / T.OLD_CLIP
    assert factor > 1
    got = t.opt.state_dict()["state"]
    for k, (m, v) in ref.items():
        assert torch.allclose(got[k]["exp_avg"], m * factor, rtol=1e-5, atol=0)
        assert torch.allclose(got[k]["exp_avg_sq"], v * factor * factor, rtol=1e-5, atol=0)
    assert all(g["eps"] == T.ADAM_EPS for g in t.opt.param_groups)
    # a checkpoint of this code is resumed as it is
    t.save()
    u = _trainer(data_dir, tmp_path / "a")
    for k, s in u.opt.state_dict()["state"].items():
        assert torch.equal(s["exp_avg_sq"], got[k]["exp_avg_sq"])


def test_a_diverged_run_stops_without_saving_over_good_checkpoints(data_dir, tmp_path, capsys):
    """A learning rate that blows the weights up: the run stops with one line and exit 1, and
    last.pt / best.pt keep the last good state (a NaN validation once replaced best.pt, and a
    NaN best score then let every later validation replace it).  --lr inf is refused."""
    import signal

    from aecodec.train import main

    callers = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    run = tmp_path / "run"
    common = [str(data_dir), "--run-dir", str(run), "--N", "16", "--M", "24", "--crop", "64", "--val-crop", "64",
              "--batch", "2", "--threads", "1", "--quiet", "--val-images", "1", "--log-every", "1"]
    assert main(common + ["--steps", "2"]) == 0
    good = {n: (run / n).read_bytes() for n in ("last.pt", "best.pt")}
    capsys.readouterr()
    assert main(common + ["--steps", "6", "--lr", "1e30", "--warmup", "0"]) == 1
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "nothing was saved" in err and "Traceback" not in err
    assert "last.pt keeps the last good checkpoint" in err
    assert {n: (run / n).read_bytes() for n in good} == good
    assert signal.getsignal(signal.SIGINT) is callers  # the caller's handler is back
    # --fresh, then a divergence before the first checkpoint: the message says where things are
    assert main(common + ["--steps", "6", "--lr", "1e30", "--warmup", "0", "--fresh"]) == 1
    err = capsys.readouterr().err
    assert "this run wrote no checkpoint" in err and "was moved to" in err
    aside = list(run.glob("replaced-*"))
    assert len(aside) == 1 and (aside[0] / "last.pt").read_bytes() == good["last.pt"]
    for f in aside[0].iterdir():  # put the earlier run back for the checks below
        os.replace(f, run / f.name)
    with pytest.raises(SystemExit) as e:
        main(common + ["--lr", "inf"])
    assert e.value.code == 2
    # a NaN best score from an older run is no best at all
    st = torch.load(run / "last.pt", weights_only=False)
    st["best_val"] = float("nan")
    torch.save(st, run / "last.pt")
    assert _trainer(data_dir, run).best_val is None


def test_odd_training_folders(data_dir, tmp_path, capsys):
    """A run directory inside the training folder is refused (its plot would become a training
    image and move the held-out split); images under 64 px are left out with a note (one in
    the held-out slot crashed validation); 16-bit grey is read as compress reads it (it was
    clipped to white); a file as DATA says so."""
    import shutil

    from aecodec.train import load_rgb, main, training_split

    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    common = ["--N", "16", "--M", "24", "--crop", "64", "--val-crop", "64", "--batch", "2", "--threads", "1",
              "--quiet", "--val-images", "1", "--steps", "1"]
    with pytest.raises(SystemExit) as e:
        main([str(d), "--run-dir", str(d / "run"), *common])
    assert e.value.code == 2 and "inside the training folder" in capsys.readouterr().err
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(d / "small.png")
    train, held = training_split(d, 1)
    assert "small.png" not in [p.name for p in train + held] and "under 64 pixels" in capsys.readouterr().err
    g = (np.arange(96 * 96, dtype=np.uint32).reshape(96, 96) * 7 % 65536).astype(np.uint16)
    Image.fromarray(g).save(d / "deep.png")
    assert np.array_equal(load_rgb(d / "deep.png")[:, :, 0], np.round(g / 257.0).astype(np.uint8))
    assert main([str(d), "--run-dir", str(tmp_path / "run"), *common]) == 0
    assert main([str(d / "small.png"), "--run-dir", str(tmp_path / "run2"), *common]) == 1
    assert "a file, not a folder" in capsys.readouterr().err


def test_bad_init_files_and_a_damaged_checkpoint_are_one_line(data_dir, tmp_path, capsys):
    """--init that is missing, not safetensors, or not a checkpoint, and a damaged last.pt:
    one line each, exit 1 (they were tracebacks), the damaged one naming --fresh."""
    from aecodec.train import main

    (tmp_path / "junk.safetensors").write_text("junk")
    (tmp_path / "junk.pt").write_text("garbage")
    common = ["--N", "16", "--M", "24", "--crop", "64", "--val-crop", "64", "--batch", "2", "--threads", "1",
              "--quiet", "--val-images", "1", "--steps", "1"]
    for init, says in ((tmp_path / "none.safetensors", "no such file"), (tmp_path / "junk.safetensors", "safetensors"),
                       (tmp_path / "junk.pt", "not release weights"),
                       (next(data_dir.iterdir()), "not release weights")):
        assert main([str(data_dir), "--run-dir", str(tmp_path / "r"), "--fresh", "--init", str(init), *common]) == 1
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and err.strip().count("\n") <= 1, err
        assert not (tmp_path / "r").exists()  # a run that never started leaves no empty folder
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "last.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert main([str(data_dir), "--run-dir", str(tmp_path / "r2"), *common]) == 1
    assert "cannot be resumed" in capsys.readouterr().err
    assert main([str(data_dir), "--run-dir", str(tmp_path / "r2"), "--fresh", *common]) == 0  # the way out
    assert len(list((tmp_path / "r2").glob("replaced-*/last.pt"))) == 1


def test_the_command_that_started_a_run_resumes_it(data_dir, tmp_path, capsys):
    """Rerunning `aecodec train DATA --init W ...` after a stop resumes the run W started (it
    was a usage error); another --init is still refused, as it would be ignored."""
    from aecodec.export import export_checkpoint
    from aecodec.train import main

    common = ["--N", "16", "--M", "24", "--crop", "64", "--val-crop", "64", "--batch", "2", "--threads", "1",
              "--quiet", "--val-images", "1"]
    src = _trainer(data_dir, tmp_path / "src")
    src.train_step()
    export_checkpoint(src.save(), tmp_path / "w.safetensors")
    src.train_step()
    export_checkpoint(src.save(), tmp_path / "w2.safetensors")  # other weights
    cmd = [str(data_dir), "--run-dir", str(tmp_path / "run"), "--init", str(tmp_path / "w.safetensors"), *common]
    assert main(cmd + ["--steps", "1"]) == 0
    assert main(cmd + ["--steps", "2"]) == 0
    assert "this run started from it, so it is resumed" in capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 3  # 1, then 2 more
    with pytest.raises(SystemExit) as e:
        main(cmd[:3] + ["--init", str(tmp_path / "w2.safetensors"), *common, "--steps", "3"])
    assert e.value.code == 2


def test_adam_eps_option(data_dir, tmp_path):
    """--adam-eps sets the main optimiser's epsilon (default 1e-5), also over a resumed one's."""
    from aecodec.train import ADAM_EPS

    a = _trainer(data_dir, tmp_path / "a")
    assert ADAM_EPS == 1e-5 and all(g["eps"] == ADAM_EPS for g in a.opt.param_groups)
    assert all(g["eps"] == 1e-8 for g in a.aux_opt.param_groups)  # the aux optimiser keeps torch's default
    a.train_step()
    a.save()
    b = _trainer(data_dir, tmp_path / "a", "--adam-eps", "1e-8", "--clip", "5")
    assert b.step == 1 and all(g["eps"] == 1e-8 for g in b.opt.param_groups) and b.clip == 5
    b.train_step()
    b.save()
    c = _trainer(data_dir, tmp_path / "a")  # resumed without the flags: the run keeps its own, as --lr does
    assert c.step == 2 and all(g["eps"] == 1e-8 for g in c.opt.param_groups) and c.clip == 5
    assert _trainer(data_dir, tmp_path / "new").clip == 50


def test_ema_averages_the_weights(data_dir, tmp_path):
    tr = _trainer(data_dir, tmp_path / "run", "--ema", "0.9")
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}
    for _ in range(5):
        tr.train_step()
    w = "g_a.0.weight"
    live, avg, w0 = tr.model.state_dict()[w], tr.ema.model.state_dict()[w], start[w]
    # the average lies strictly between the start and the current weights
    assert not torch.equal(avg, live) and not torch.equal(avg, w0)
    assert (avg - w0).norm() < (live - w0).norm()
    assert not any(p.requires_grad for p in tr.ema.model.parameters())
    off = _trainer(data_dir, tmp_path / "off", "--ema", "0")
    assert off.ema is None
    off.train_step()
    assert off._state()["ema"] is None


def test_gdn_training_path_matches_coding_path():
    from aecodec.model import GDN

    torch.manual_seed(0)
    for inverse in (False, True):
        g = GDN(8, inverse=inverse)
        with torch.no_grad():
            g.gamma.add_(0.05 * torch.rand_like(g.gamma))
        x = torch.randn(2, 8, 5, 7)
        g.train()
        a = g(x)
        g.eval()
        b = g(x)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_export_then_load_decodes(data_dir, tmp_path, monkeypatch):
    import aecodec
    from aecodec import weights as W
    from aecodec.export import export_checkpoint

    tr = _trainer(data_dir, tmp_path / "run")
    for _ in range(3):
        tr.train_step()
    ckpt = tr.save()
    wdir = tmp_path / "weights"
    wdir.mkdir()
    entry = export_checkpoint(ckpt, wdir / "tiny.safetensors", register_in=wdir)
    # the moving average is what ships by default from a checkpoint other than best.pt; the raw weights on request
    raw = export_checkpoint(ckpt, tmp_path / "raw.safetensors", use_ema=False)
    assert raw["model_id"] != entry["model_id"]
    assert W.read_metadata(wdir / "tiny.safetensors")["training_weights"].startswith("moving average")
    monkeypatch.setenv("AECODEC_WEIGHTS_DIR", str(wdir))
    monkeypatch.setattr(W, "_cache", {})
    img = np.asarray(Image.open(next(data_dir.glob("*.png"))))
    data = aecodec.compress(img, quality=4)
    assert aecodec.info(data)["model"] == entry["model_id"]
    out = aecodec.decompress(data)
    assert out.size == (img.shape[1], img.shape[0])
    # the exported file carries the CDF tables: loading never rebuilds them
    meta = W.read_metadata(wdir / "tiny.safetensors")
    assert meta["training_steps"] == "3" and meta["architecture"] == W.ARCH
    state = W.load_state_dict_file(wdir / "tiny.safetensors")
    assert state["gaussian_conditional._quantized_cdf"].numel() > 0


def test_log_kinds_are_kept_apart_and_plotted(tmp_path):
    from aecodec.train import plot_log, read_log

    log = tmp_path / "log.jsonl"
    val = {"bpp": [0.1, 0.2], "psnr": [20.0, 22.0]}
    lines = [{"kind": "train", "step": 1, "loss": 2.0, "psnr": 20.0},
             {"kind": "val", "step": 1, **val}, {"kind": "val_ema", "step": 1, **val},
             {"kind": "train", "step": 2, "loss": 1.5, "psnr": 21.0}]
    log.write_text("\n".join(__import__("json").dumps(r) for r in lines) + '\n{"kind": "val", "st')
    rows = read_log(log)
    assert [len(rows[k]) for k in ("train", "val", "val_ema")] == [2, 1, 1]
    plot_log(log, tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").format == "PNG"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_background_run_stops_cleanly_on_a_signal(data_dir, tmp_path, sig):
    """`nohup aecodec train ... &` inherits an ignored SIGINT; kill -INT / -TERM must
    still end the run with a checkpoint (it used to keep running, or die without one)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "aecodec.train", str(data_dir), "--run-dir", str(run), "--N", "16",
           "--M", "24", "--crop", "64", "--batch", "2", "--val-crop", "64", "--threads", "1", "--quiet",
           "--log-every", "1", "--ckpt-minutes", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        log = run / "log.jsonl"
        deadline = time.time() + 120
        while not (log.exists() and log.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "training never logged a step"
            time.sleep(0.2)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + getattr(signal, sig), err  # 130 after Ctrl-C, 143 after kill
    assert f"{sig}: saving a checkpoint" in err and "EMA val" not in err  # no final validation
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if '"train"' in line]
    assert state["step"] >= max(steps) >= 1
    assert os.listdir(run).count("last.pt.tmp") == 0


def test_device_choice_is_checked():
    from aecodec.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SystemExit, match="--device 'potato'"):
        resolve_device("potato")
    with pytest.raises(SystemExit, match="only cpu and cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_pack_keeps_the_training_split_only(data_dir, tmp_path):
    from aecodec.train import list_images, load_rgb, main, split_files

    out = tmp_path / "pack"
    assert main([str(data_dir), "--pack-to", str(out), "--val-images", "1"]) == 0
    train, held_out = split_files(list_images(data_dir), 1)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.stem + ".jpg" for p in train)
    for p in train:
        a, b = load_rgb(p).astype(int), load_rgb(out / (p.stem + ".jpg")).astype(int)
        assert a.shape == b.shape and np.abs(a - b).mean() < 3  # JPEG q95 4:4:4: close, not exact
    assert not (out / (held_out[0].stem + ".jpg")).exists()
    # packing again into the same (now full) folder would overwrite it: usage error, nothing touched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit) as e:
        main([str(data_dir), "--pack-to", str(out), "--val-images", "2"])
    assert e.value.code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_init_is_not_silently_ignored_by_a_resume(data_dir, tmp_path):
    from aecodec.export import export_checkpoint

    a = _trainer(data_dir, tmp_path / "a")
    a.train_step()
    a.save()
    export_checkpoint(a.save(), tmp_path / "a.safetensors")
    from aecodec.train import main

    with pytest.raises(SystemExit) as e:
        main([str(data_dir), "--run-dir", str(tmp_path / "a"), "--init", str(tmp_path / "a.safetensors")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # the batch probe too (it would probe the resumed model)
        main([str(data_dir), "--run-dir", str(tmp_path / "a"), "--init", str(tmp_path / "a.safetensors"),
              "--probe-batches", "2"])
    assert e.value.code == 2
    with pytest.raises(SystemExit, match="--init ignored"):  # and the library's Trainer itself
        _trainer(data_dir, tmp_path / "a", "--init", str(tmp_path / "a.safetensors"))
    assert _trainer(data_dir, tmp_path / "a", "--init", str(tmp_path / "a.safetensors"), "--fresh").step == 0
    assert _trainer(data_dir, tmp_path / "a").step == 1  # a plain resume is unchanged


def test_fresh_sets_the_earlier_run_aside_not_over_it(data_dir, tmp_path):
    """--fresh starts over without destroying what was there: the earlier run's checkpoints
    and log move into a replaced-DATE folder at the new run's first write (not before: a fresh
    run stopped at once leaves the earlier one in place), and the new log starts empty."""
    from aecodec.train import read_log

    old = _trainer(data_dir, tmp_path / "a", "--steps", "2", "--log-every", "1")
    old.run()
    old_files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "last.pt" in old_files and "log.jsonl" in old_files
    old_log = (tmp_path / "a" / "log.jsonl").read_text()
    new = _trainer(data_dir, tmp_path / "a", "--fresh", "--steps", "1", "--log-every", "1")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == old_files  # nothing moved yet
    new.run()
    aside = list((tmp_path / "a").glob("replaced-*"))
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == old_files
    assert (aside[0] / "log.jsonl").read_text() == old_log
    assert torch.load(aside[0] / "last.pt", weights_only=False)["step"] == 2
    assert torch.load(tmp_path / "a" / "last.pt", weights_only=False)["step"] == 1
    assert [r["step"] for r in read_log(tmp_path / "a" / "log.jsonl")["train"]] == [1]


def test_checkpoint_without_validation(data_dir, tmp_path):
    from aecodec.train import read_log

    tr = _trainer(data_dir, tmp_path / "run")
    tr.train_step()
    tr.checkpoint_and_validate(validate=False)
    assert (tr.run_dir / "last.pt").exists()
    assert not (tr.run_dir / "log.jsonl").exists() or not read_log(tr.run_dir / "log.jsonl")["val"]
    tr.checkpoint_and_validate()
    rows = read_log(tr.run_dir / "log.jsonl")
    assert [r["step"] for r in rows["val"]] == [r["step"] for r in rows["val_ema"]] == [1]


def test_best_checkpoint_is_kept(data_dir, tmp_path):
    tr = _trainer(data_dir, tmp_path / "run")
    tr.train_step()
    tr.checkpoint_and_validate()
    best = tr.run_dir / "best.pt"
    assert best.exists() and tr.best_val is not None
    first = torch.load(best, map_location="cpu", weights_only=False)
    assert first["step"] == 1 and first["best_val"] == tr.best_val
    # a worse validation leaves best.pt alone; a better one replaces it
    tr.best_val = -1.0
    tr.train_step()
    tr.checkpoint_and_validate()
    assert torch.load(best, map_location="cpu", weights_only=False)["step"] == 1
    tr.best_val = float("inf")
    tr.train_step()
    tr.checkpoint_and_validate()
    assert torch.load(best, map_location="cpu", weights_only=False)["step"] == 3
    # the best score survives a resume
    score = tr.best_val
    del tr
    assert _trainer(data_dir, tmp_path / "run").best_val == score


def test_learning_rate_schedule():
    from aecodec.train import lr_at

    assert lr_at(0, 1.0, 10, None, 100) == pytest.approx(0.1)
    assert lr_at(50, 1.0, 10, None, 100) == 1.0
    assert lr_at(50, 1.0, 10, 50, 100) == 1.0
    assert lr_at(100, 1.0, 10, 50, 100) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_at(500, 1.0, 10, 50, 100) == pytest.approx(0.05)
    # a re-warm ramps up again from its own step
    assert lr_at(500, 1.0, 10, None, 100, warmup_from=495) == pytest.approx(0.6)
    assert lr_at(505, 1.0, 10, None, 100, warmup_from=495) == 1.0


def test_decay_and_rewarm_survive_a_resume(data_dir, tmp_path):
    tr = _trainer(data_dir, tmp_path / "run", "--decay-now", "--decay-steps", "8")
    tr.train_step()
    tr.train_step()
    tr.save()
    del tr
    # resumed without the flags, the decay goes on at its own length
    tr = _trainer(data_dir, tmp_path / "run")
    assert (tr.decay_start, tr.decay_steps) == (0, 8)
    tr.train_step()
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * 2 / 8))))
    tr.save()
    del tr
    tr = _trainer(data_dir, tmp_path / "run", "--rewarm", "--warmup", "4")
    assert tr.decay_start is None and tr.warmup_from == 3
    tr.train_step()
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)
    tr.save()
    del tr
    tr = _trainer(data_dir, tmp_path / "run", "--warmup", "4")
    tr.train_step()
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(2e-3 / 4)


def test_rewarm_with_a_decay_is_a_usage_error(data_dir, tmp_path):
    from aecodec.train import main

    with pytest.raises(SystemExit) as e:
        main([str(data_dir), "--run-dir", str(tmp_path / "r"), "--rewarm", "--decay-now"])
    assert e.value.code == 2


def test_learning_rate_is_kept_in_the_checkpoint(data_dir, tmp_path):
    def trainer(*extra):
        args = build_parser().parse_args([str(data_dir), "--run-dir", str(tmp_path / "run"), "--N", "16", "--M", "24",
                                          "--crop", "64", "--warmup", "1", "--val-crop", "64", "--threads", "1",
                                          "--quiet", *extra])
        return Trainer(args)

    tr = trainer("--lr", "5e-4")
    tr.train_step()
    tr.save()
    del tr
    tr = trainer()  # resumed without --lr: the run's own rate, not the default
    tr.train_step()
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    tr.save()
    del tr
    tr = trainer("--lr", "1e-4")  # the command line wins
    tr.train_step()
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("spoil, preferred", [("ema", "raw"), ("raw", "ema")])
def test_best_checkpoint_records_the_better_weights_for_export(data_dir, tmp_path, spoil, preferred):
    from aecodec.export import load_checkpoint_model

    tr = _trainer(data_dir, tmp_path / "run")
    for _ in range(3):
        tr.train_step()
    spoilt = tr.ema.model if spoil == "ema" else tr.model
    with torch.no_grad():
        spoilt.g_s[0].weight.mul_(-3.0)
    tr.checkpoint_and_validate()
    best = torch.load(tr.run_dir / "best.pt", map_location="cpu", weights_only=False)
    assert best["export_weights"] == preferred
    auto, _ = load_checkpoint_model(tr.run_dir / "best.pt")
    chosen, _ = load_checkpoint_model(tr.run_dir / "best.pt", use_ema=preferred == "ema")
    for (n, a), (_, b) in zip(auto.state_dict().items(), chosen.state_dict().items()):
        assert torch.equal(a, b), n
    # last.pt carries no such choice: export gives its moving average unless asked otherwise
    last, st = load_checkpoint_model(tr.run_dir / "last.pt")
    assert st["exported_weights"].startswith("moving average")


def test_export_command_chooses_the_weights(data_dir, tmp_path):
    from click.testing import CliRunner

    from aecodec import weights as W
    from aecodec.cli import main

    tr = _trainer(data_dir, tmp_path / "run")
    tr.train_step()
    ckpt = str(tr.save())
    out = tmp_path / "w" / "raw.safetensors"
    out.parent.mkdir()
    r = CliRunner().invoke(main, ["export", ckpt, str(out), "--no-register", "--weights", "raw"])
    assert r.exit_code == 0, r.output
    assert W.read_metadata(out)["training_weights"] == "raw"
    assert not (out.parent / "manifest.json").exists()
    r = CliRunner().invoke(main, ["export", ckpt, str(out), "--no-register", "--weights", "average"])
    assert r.exit_code == 2
    # a checkpoint without a moving average cannot give one: one line, exit 1, nothing written
    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    st["ema"] = None
    torch.save(st, tmp_path / "no-ema.pt")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "no-ema.pt"), str(tmp_path / "w" / "e.safetensors"),
                                  "--no-register", "--weights", "ema"])
    assert r.exit_code == 1 and "no moving average" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "w" / "e.safetensors").exists()
    # export registers nothing unless asked: a release goes through tools/release.py ship
    r = CliRunner().invoke(main, ["export", ckpt, str(tmp_path / "w" / "d.safetensors")])
    assert r.exit_code == 0, r.output
    assert not (out.parent / "manifest.json").exists()
    r = CliRunner().invoke(main, ["export", ckpt, str(tmp_path / "w" / "r.safetensors"), "--register"])
    assert r.exit_code == 0, r.output
    assert W.read_manifest(out.parent)["default"] == W.read_metadata(tmp_path / "w" / "r.safetensors")["model_id"]
    # a file that is not a checkpoint at all: one line naming it, exit 1
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    r = CliRunner().invoke(main, ["export", str(tmp_path / "photo.png"), str(tmp_path / "w" / "p.safetensors")])
    assert r.exit_code == 1 and "not a training checkpoint" in r.output and len(r.output.splitlines()) == 1, r.output


# -- the device-side crop sampler (what a GPU run uses) and the batch probe -----------------------------

def _coordinate_images():
    """Images whose pixels name themselves: R = image number, G = row, B = column."""
    ims = []
    for i, (h, w) in enumerate([(40, 70), (90, 33), (50, 50)]):
        im = np.zeros((h, w, 3), np.uint8)
        im[..., 0] = i
        im[..., 1] = np.arange(h)[:, None]
        im[..., 2] = np.arange(w)[None, :]
        ims.append(im)
    return ims


def test_device_sampler_cuts_whole_crops_with_both_flips():
    from aecodec.train import DeviceCropSampler

    ims = _coordinate_images()
    s = DeviceCropSampler(ims, 32, seed=0, device="cpu")
    seen_images, flips = set(), set()
    for _ in range(20):
        x = (s.batch(8) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert x.shape == (8, 32, 32, 3)
        for crop in x:
            i = int(crop[0, 0, 0])
            assert (crop[..., 0] == i).all()
            h, w = ims[i].shape[:2]
            rows, cols = crop[:, 0, 1].astype(int), crop[0, :, 2].astype(int)
            # every row of the crop is one image row, every column one image column, all inside
            assert (crop[..., 1] == rows[:, None]).all() and (crop[..., 2] == cols[None, :]).all()
            assert abs(np.diff(rows)).tolist() == [1] * 31 and abs(np.diff(cols)).tolist() == [1] * 31
            assert rows.min() >= 0 and rows.max() < h and cols.max() < w
            seen_images.add(i)
            flips.add((rows[1] < rows[0], cols[1] < cols[0]))
    assert seen_images == {0, 1, 2}
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_device_sampler_drops_small_images_and_resumes_exactly():
    from aecodec.train import DeviceCropSampler

    ims = _coordinate_images()
    s = DeviceCropSampler(ims, 40, seed=3, device="cpu")
    assert len(s.images) == 2  # 90x33 is narrower than a crop
    s.batch(4)
    st = s.state()
    a, qa = s.batch(5), s.levels(5, 8)
    s.batch(7)
    s.set_state(st)
    assert torch.equal(s.batch(5), a) and torch.equal(s.levels(5, 8), qa)
    with pytest.raises(ValueError, match="at least 100x100"):
        DeviceCropSampler(ims, 100, seed=0, device="cpu")


def test_resume_is_bit_exact_with_the_device_sampler(data_dir, tmp_path):
    a = _trainer(data_dir, tmp_path / "a", "--sampler", "device")
    assert a.sampler.kind == "device"
    for _ in range(3):
        a.train_step()
    a.save()
    expected = a.train_step()["loss"]
    c = _trainer(data_dir, tmp_path / "a", "--sampler", "device")
    assert c.step == 3 and c.train_step()["loss"] == expected


def test_resume_with_the_other_sampler_starts_a_new_stream(data_dir, tmp_path, capsys):
    a = _trainer(data_dir, tmp_path / "a")  # cpu: the host sampler
    assert a.sampler.kind == "host"
    a.train_step()
    a.save()
    c = _trainer(data_dir, tmp_path / "a", "--sampler", "device")
    assert c.step == 1 and c.sampler.kind == "device"
    assert "starts a new stream" in capsys.readouterr().err
    assert np.isfinite(c.train_step()["loss"])


def test_probe_times_each_batch_and_recommends_one(data_dir, tmp_path, capsys):
    import json

    from aecodec.train import main, recommend, recommend_batch

    rc = main([str(data_dir), "--run-dir", str(tmp_path / "p"), "--N", "16", "--M", "24", "--crop", "64",
               "--threads", "1", "--quiet", "--probe-batches", "1,2", "--amp", "auto"])
    out = capsys.readouterr()
    assert rc == 0
    res = json.loads(out.out.strip().splitlines()[-1])
    assert [(r["amp"], r["batch"]) for r in res["probe"]] == [("off", 1), ("off", 2), ("bf16", 1), ("bf16", 2)]
    assert res["recommended_batch"] in (1, 2) and res["recommended_amp"] in ("off", "bf16")
    assert all(r["crops_per_s"] > 0 for r in res["probe"])
    assert not (tmp_path / "p" / "last.pt").exists()  # a probe saves nothing
    rows = [{"batch": 16, "crops_per_s": 700}, {"batch": 32, "crops_per_s": 1200},
            {"batch": 64, "crops_per_s": 1300}, {"batch": 128, "crops_per_s": 2600}]
    assert recommend_batch(rows) == 32  # 64 adds under 20 %: stop there
    assert recommend_batch(rows[:1]) == 16
    assert recommend(rows) == ("off", 32)
    off = [{**r, "amp": "off"} for r in rows]  # float32's pick: batch 32 at 1200 crops/s

    def bf16(at32):
        return [{"amp": "bf16", "batch": b, "crops_per_s": c} for b, c in ((16, 900), (32, at32), (64, 1600))]

    assert recommend(off + bf16(1500)) == ("off", 32)  # 1.25x: not worth bf16
    assert recommend(off + bf16(1580)) == ("bf16", 32)  # >= 1.3 x 1200
    with pytest.raises(SystemExit):
        main([str(data_dir), "--probe-batches", "16,x"])
    with pytest.raises(SystemExit):  # auto only chooses in a probe
        main([str(data_dir), "--run-dir", str(tmp_path / "q"), "--amp", "auto", "--steps", "1"])


def test_export_adds_a_warm_started_run_to_its_parents_record(data_dir, tmp_path):
    import json
    import os

    from aecodec import weights as W
    from aecodec.export import export_checkpoint

    a = _trainer(data_dir, tmp_path / "a")
    for _ in range(3):
        a.train_step()
    ea = export_checkpoint(a.save(), tmp_path / "a.safetensors")
    meta_a = W.read_metadata(tmp_path / "a.safetensors")
    assert "training_lineage" not in meta_a and meta_a["training_steps"] == "3"

    b = _trainer(data_dir, tmp_path / "b", "--init", str(tmp_path / "a.safetensors"))
    for _ in range(2):
        b.train_step()
    b.save()
    b = _trainer(data_dir, tmp_path / "b")  # the parent survives a resume (a GPU run's phase 2)
    b.train_step()
    export_checkpoint(b.save(), tmp_path / "b.safetensors")
    m = W.read_metadata(tmp_path / "b.safetensors")
    assert m["training_steps"] == "6" and m["training_crops_seen"] == str(6 * 4)
    assert m["training_parent"] == ea["model_id"]
    stages = json.loads(m["training_lineage"])
    assert [s["steps"] for s in stages] == [3, 3] and stages[0]["result"] == ea["model_id"]
    here = f"cpu_{os.cpu_count()}_cores"
    assert stages[1]["device"] == here and stages[1]["batch"] == 4
    hours = json.loads(m["training_hours"])
    assert set(hours) == {"earlier stages", here} and all(v >= 0 for v in hours.values())

    # a run started from another run's checkpoint counts that run's steps as a stage
    c = _trainer(data_dir, tmp_path / "c", "--init", str(tmp_path / "b" / "last.pt"))
    c.train_step()
    export_checkpoint(c.save(), tmp_path / "c.safetensors")
    m = W.read_metadata(tmp_path / "c.safetensors")
    assert m["training_steps"] == "7"
    assert [s["steps"] for s in json.loads(m["training_lineage"])] == [3, 3, 1]


def test_a_new_quality_level_starts_from_the_trained_ones(data_dir, tmp_path):
    import math

    from aecodec.model import DEFAULT_LAMBDAS
    from aecodec.train import map_levels

    assert map_levels([1.0, 2.0, 4.0], [1.0, 2.0, 4.0, 8.0]) == [(0, 0.0), (1, 0.0), (2, 0.0),
                                                                  (2, 0.5 * math.log(2.0))]
    a = _trainer(data_dir, tmp_path / "a")
    a.train_step()
    a.save()
    more = list(DEFAULT_LAMBDAS) + [0.35]
    spec = ",".join(map(str, more))
    b = _trainer(data_dir, tmp_path / "b", "--init", str(tmp_path / "a" / "last.pt"), "--lambdas", spec)
    assert b.model.levels == 9 and b.model.lambdas == tuple(more)
    for k, sign in (("log_gain", 1.0), ("log_inv_gain", -1.0)):
        old, new = getattr(a.model, k).detach(), getattr(b.model, k).detach()
        assert torch.equal(new[:8], old)  # trained levels kept exactly
        assert torch.allclose(new[8], old[7] + sign * 0.5 * math.log(0.35 / 0.18))
    b.train_step()
    b.save()
    c = _trainer(data_dir, tmp_path / "b")  # a resume takes the checkpoint's levels
    assert c.model.levels == 9
    with pytest.raises(SystemExit, match="trains the levels"):
        _trainer(data_dir, tmp_path / "b", "--lambdas", "0.01,0.02")
    from aecodec.train import main

    for bad in ("0.02,0.01", "x", "0,0.1", "0.1,0.1"):
        with pytest.raises(SystemExit, match="--lambdas takes"):
            _trainer(data_dir, tmp_path / "d", "--lambdas", bad)
        with pytest.raises(SystemExit) as e:  # on the command line: a usage error
            main([str(data_dir), "--lambdas", bad])
        assert e.value.code == 2


def test_bf16_transforms_train_and_stay_close_to_float32(data_dir, tmp_path):
    from aecodec.model import rd_loss

    tr = _trainer(data_dir, tmp_path / "run", "--amp", "bf16")
    assert tr.model.transform_dtype == torch.bfloat16
    x = tr.sampler.batch(4)
    q = torch.arange(4) * 2
    tr.model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        lo = rd_loss(tr.model(x, q), x, tr.lambdas[q])
    tr.model.transform_dtype = None
    torch.manual_seed(1)
    with torch.no_grad():
        hi = rd_loss(tr.model(x, q), x, tr.lambdas[q])
    tr.model.transform_dtype = torch.bfloat16
    # the same function up to bfloat16 rounding of the convolutions
    assert float(lo["loss"]) == pytest.approx(float(hi["loss"]), rel=0.03)
    assert float(lo["loss"]) != float(hi["loss"])  # and it did run in bfloat16
    before = _fixed_loss(tr)
    for _ in range(40):
        tr.train_step()
    assert _fixed_loss(tr) < 0.8 * before
    # evaluation and coding (eval mode) never use it
    tr.model.eval()
    with torch.no_grad():
        a = tr.model(x, 3)["x_hat"]
        tr.model.transform_dtype = None
        assert torch.equal(a, tr.model(x, 3)["x_hat"]) and a.dtype == torch.float32


@pytest.mark.parametrize("bad", [["--crop", "100"], ["--crop", "0"], ["--val-crop", "96"], ["--batch", "0"],
                                 ["--lr", "0"], ["--ema", "1"], ["--steps", "-1"], ["--minutes", "-2"]])
def test_bad_options_are_usage_errors(data_dir, tmp_path, bad, capsys):
    from aecodec.train import main

    with pytest.raises(SystemExit) as e:
        main([str(data_dir), "--run-dir", str(tmp_path / "r"), *bad], prog="aecodec train")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"aecodec train: error: {bad[0]} must" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err  # one line, not argparse's whole usage
    assert not (tmp_path / "r").exists()


def test_bad_data_is_one_line_exit_1(data_dir, tmp_path, capsys):
    from aecodec.train import main

    common = ["--run-dir", str(tmp_path / "r"), "--steps", "1", "--quiet", "--threads", "1"]
    assert main([str(tmp_path / "nowhere"), *common], prog="aecodec train") == 1
    assert capsys.readouterr().err.strip() == f"aecodec train: error: {tmp_path / 'nowhere'}: no such directory"
    # the images are 96x96: none is large enough for the default 256x256 crops
    assert main([str(data_dir), *common], prog="aecodec train") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("aecodec train: error: no training image is at least 256x256 pixels (the largest crop they "
                       "allow: --crop 64)"), err


def test_help_states_each_default_once():
    h = build_parser().format_help()
    assert "(default: None)" not in h and "kept in the checkpoint) (default" not in h
    assert "(default 4; kept in the checkpoint)" in h and "(default: 0)" in h  # --batch: its own words; --seed: the formatter's


def test_a_second_signal_aborts_without_a_checkpoint(data_dir, tmp_path, monkeypatch):
    """The first SIGTERM asks for a checkpoint after the step; a second one during that step aborts
    (no checkpoint of a half-done step) and the exit status still names SIGTERM."""
    import os
    import signal

    from aecodec import train as T

    def step(self):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here
        raise AssertionError("the second signal did not abort the step")

    monkeypatch.setattr(T.Trainer, "_train_step", step)
    before = signal.getsignal(signal.SIGTERM)
    rc = T.main([str(data_dir), "--run-dir", str(tmp_path / "r"), "--N", "16", "--M", "24", "--crop", "64",
                 "--batch", "2", "--val-crop", "64", "--threads", "1", "--quiet"])
    assert rc == 128 + signal.SIGTERM
    assert not (tmp_path / "r" / "last.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the trainer's handler is gone


def test_an_aborted_checkpoint_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from aecodec import train as T

    T.atomic_torch_save({"v": 1}, tmp_path / "last.pt")

    def interrupted(obj, f):
        open(f, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.atomic_torch_save({"v": 2}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.pt")["v"] == 1 and not (tmp_path / "last.pt.tmp").exists()


def test_ctrl_c_while_loading_is_an_abort_not_a_traceback(data_dir, tmp_path, monkeypatch, capsys):
    from aecodec import train as T

    def loading(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "load_rgb", loading)
    rc = T.main([str(data_dir), "--run-dir", str(tmp_path / "r"), "--N", "16", "--M", "24", "--crop", "64",
                 "--batch", "2", "--val-crop", "64", "--threads", "1", "--quiet"])
    assert rc == 130 and "aborted" in capsys.readouterr().err


def test_plan_timed_decay():
    from aecodec.train import plan_timed_decay

    assert plan_timed_decay(100, 10.0, 60.0, margin=1.0) == 600  # 10 steps/s for a minute
    assert plan_timed_decay(100, 10.0, 60.0) == 582  # ends a little before the deadline
    assert plan_timed_decay(0, 0.0, 30.0, margin=1.0) == 30  # nothing measured: 1 step/s
    assert plan_timed_decay(100, 10.0, -5.0) == 1


def test_decay_minutes_decays_in_the_same_run(data_dir, tmp_path):
    """--minutes M --decay-minutes D: constant rate, then a cosine decay whose length comes from
    the run's own speed, in one process (a resume straight into a high rate spiked on a GPU)."""
    import json

    from aecodec.train import main

    run = tmp_path / "run"
    rc = main([str(data_dir), "--run-dir", str(run), "--N", "16", "--M", "24", "--crop", "64", "--batch", "2",
               "--warmup", "1", "--lr", "1e-3", "--val-crop", "64", "--threads", "1", "--quiet", "--log-every", "1",
               "--minutes", "0.18", "--decay-minutes", "0.06"])
    assert rc == 0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    (decay,) = [r for r in rows if r["kind"] == "decay"]
    train = [r for r in rows if r["kind"] == "train"]
    # the decay takes the last 3.6 s of the 10.8 s run (the first log line is one step in; a
    # decay at start + D instead would be 3.6 s off)
    assert decay["time"] - train[0]["time"] == pytest.approx(7.2, abs=2.4)
    before = [r["lr"] for r in train if r["step"] <= decay["step"]]
    after = [r["lr"] for r in train if r["step"] > decay["step"]]
    assert before and set(before[1:]) == {1e-3}  # the constant rate up to the decay
    assert len(after) >= 2 and after == sorted(after, reverse=True)
    # sized from the measured speed: most of the planned steps are run, and the rate gets well down
    assert 0.5 * decay["steps"] <= train[-1]["step"] - decay["step"] <= decay["steps"]
    assert after[-1] < 0.5e-3
    st = torch.load(run / "decay-start.pt", map_location="cpu", weights_only=False)
    assert st["step"] == decay["step"]
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert (last["decay_start"], last["decay_steps"]) == (decay["step"], decay["steps"])


@pytest.mark.parametrize("extra", [["--decay-minutes", "1"], ["--minutes", "1", "--decay-minutes", "2"],
                                   ["--minutes", "2", "--decay-minutes", "1", "--decay-now"],
                                   ["--minutes", "2", "--decay-minutes", "-1"],
                                   ["--minutes", "2", "--decay-minutes", "1", "--steps", "50"]])
def test_decay_minutes_usage_errors(data_dir, tmp_path, extra, capsys):
    from aecodec.train import main

    with pytest.raises(SystemExit) as e:
        main([str(data_dir), "--run-dir", str(tmp_path / "r"), *extra])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_decay_minutes_on_a_decaying_run_needs_rewarm(data_dir, tmp_path):
    tr = _trainer(data_dir, tmp_path / "run", "--decay-now", "--decay-steps", "8")
    tr.train_step()
    tr.save()
    del tr
    with pytest.raises(SystemExit, match="already in a learning-rate decay.*without --decay-minutes.*--rewarm"):
        _trainer(data_dir, tmp_path / "run", "--minutes", "2", "--decay-minutes", "1")
    tr = _trainer(data_dir, tmp_path / "run", "--minutes", "2", "--decay-minutes", "1", "--rewarm")
    assert tr.decay_start is None


@pytest.mark.slow
def test_gpu_train_script_on_the_cpu(tmp_path, photo_crops):
    """docs/gpu-train.sh, as GPU.md smoke-tests it before spending device time: call 1 leaves
    the weights at the end and at the start of the decay, call 2 (MORE=1) resumes the same run."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "repo"  # the layout the script runs in: codec/, weights/, .gpu/train
    (root / ".gpu" / "train").mkdir(parents=True)
    for name in ("codec", "weights"):
        (root / name).symlink_to(repo / name)
    for i in range(5):
        Image.fromarray(photo_crops[i % len(photo_crops)]).save(root / ".gpu" / "train" / f"p{i}.jpg", quality=95)
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "RUN_DIR": str(tmp_path / "run"),
           "THREADS": "1", "PKG_DIR": str(tmp_path / "pkg")}
    for call, extra in (("1", {"BATCH": "2"}), ("2", {"MORE": "1"})):
        out = tmp_path / f"out{call}"
        out.mkdir()
        r = subprocess.run(["sh", str(repo / "docs" / "gpu-train.sh"), "0.3", "0.15", "--crop", "64",
                            "--val-images", "1", "--val-crop", "64", "--warmup", "3"],
                           cwd=root, env={**env, **extra, "OUT": str(out)}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert {p.name for p in out.iterdir()} >= {"raw.safetensors", "ema.safetensors", "const-ema.safetensors",
                                                     "log.jsonl"}
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        assert len([r for r in rows if r["kind"] == "decay"]) == int(call)  # one decay per call
    shutil.rmtree(tmp_path / "pkg")


def test_loss_spike():
    from aecodec.train import loss_spike

    calm = [2.4, 2.5, 2.3, 2.45, 2.5, 2.35, 2.4, 2.42]
    assert loss_spike(2.6, calm) is None
    assert loss_spike(10.0, calm) == pytest.approx(2.41)  # session 9's resume spikes: loss 6-10 against 2.3-2.5
    assert loss_spike(float("nan"), calm) == pytest.approx(2.41)
    assert loss_spike(10.0, calm[:3]) is None  # too little history to judge


def test_a_spike_right_after_a_resume_is_reported(data_dir, tmp_path, capsys):
    """The history a spike is judged against comes from the run's log when it resumes."""
    tr = _trainer(data_dir, tmp_path / "run")
    tr.train_step()
    tr.save()
    for i in range(20):  # a calm history far below this tiny model's real loss
        tr.log({"kind": "train", "step": 1, "loss": 1e-3})
    del tr
    tr = _trainer(data_dir, tmp_path / "run", "--steps", "2", "--log-every", "1")
    capsys.readouterr()
    tr.run()
    assert "step 2: loss spike:" in capsys.readouterr().err
    fresh = _trainer(data_dir, tmp_path / "other", "--steps", "2", "--log-every", "1")
    capsys.readouterr()
    fresh.run()
    assert "loss spike" not in capsys.readouterr().err  # no history: nothing to judge against


def test_compiled_training_matches_eager_and_resumes_exactly(data_dir, tmp_path, capsys):
    """--compile: the same loss as eager mode to float rounding, the loss goes down, and a
    resumed compiled run continues where it stopped: the same crops and noise (drawn from
    torch's generator, which the checkpoint holds) and the same weights, to float rounding (the
    compiled kernels' sums are not always bit-identical from one compilation to the next:
    gradients differed by ~1e-9)."""
    import shutil

    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
        pytest.skip("torch.compile's CPU backend needs a C++ compiler")
    eager = _trainer(data_dir, tmp_path / "e")
    first = eager.train_step()["loss"]
    a = _trainer(data_dir, tmp_path / "a", "--compile")
    got = a.train_step()["loss"]
    assert got == pytest.approx(first, rel=1e-4)
    assert "--compile failed" not in capsys.readouterr().err  # it did compile
    losses = [a.train_step()["loss"] for _ in range(12)]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    a.save()
    expected = a.train_step()["loss"]
    torch._dynamo.reset()  # as in the new process a resume is: no recompilation with dynamic shapes
    c = _trainer(data_dir, tmp_path / "a", "--compile")
    assert c.step == 13
    assert c.train_step()["loss"] == pytest.approx(expected, rel=1e-6)
    for (n, p), (_, q) in zip(a.model.named_parameters(), c.model.named_parameters()):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7), n


def test_a_compiler_failure_falls_back_to_eager(data_dir, tmp_path, monkeypatch, capsys):
    """A machine without a working compiler (no C++ toolchain, an unsupported op) loses no
    training: the first step reports the failure in one line and the run goes on uncompiled."""
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("InductorError: no C++ compiler\nlong trace")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    tr = _trainer(data_dir, tmp_path / "r", "--compile")
    first = tr.train_step()
    assert np.isfinite(first["loss"]) and tr.step == 1
    err = capsys.readouterr().err
    assert "--compile failed (RuntimeError: InductorError: no C++ compiler); training on without it" in err
    assert "long trace" not in err
    assert np.isfinite(tr.train_step()["loss"])


def test_a_failure_after_a_compiled_step_is_not_swallowed(data_dir, tmp_path, monkeypatch):
    """Only the first compiled step may fall back: a later error is the run's, and is raised."""
    calls = []

    def flaky_compile(fn, **kw):
        def run(*a, **k):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("a real error")
            return fn(*a, **k)
        return run

    monkeypatch.setattr(torch, "compile", flaky_compile)
    tr = _trainer(data_dir, tmp_path / "r", "--compile")
    tr.train_step()
    with pytest.raises(RuntimeError, match="a real error"):
        tr.train_step()


def test_the_entropy_bottleneck_pass_is_compressai_s_and_compiles_whole():
    """The model's entropy bottleneck gives compressai's outputs bit for bit (training and
    evaluation), and the whole training pass compiles as one graph (compressai's own permutes
    by a tensor split it six times)."""
    from compressai.entropy_models import EntropyBottleneck

    from aecodec.model import GainedMeanScaleHyperprior, StaticPermEntropyBottleneck, rd_loss

    ours, theirs = StaticPermEntropyBottleneck(16), EntropyBottleneck(16)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 16, 5, 7) * 4
    for training in (True, False):
        ours.train(training), theirs.train(training)
        torch.manual_seed(0)
        a = ours(x)
        torch.manual_seed(0)
        b = theirs(x)
        assert all(torch.equal(u, v) for u, v in zip(a, b)), training

    m = GainedMeanScaleHyperprior(N=16, M=24).train()
    lam = torch.tensor(m.lambdas)

    def step(x, q):
        return rd_loss(m(x, q), x, lam[q])["loss"]

    torch._dynamo.reset()
    report = torch._dynamo.explain(step)(torch.rand(2, 3, 64, 64), torch.tensor([0, 7]))
    assert report.graph_break_count == 0, [str(b.reason)[:200] for b in report.break_reasons]


def test_crop_and_batch_are_kept_in_the_checkpoint(data_dir, tmp_path, capsys):
    """Rerunning a run's command without --crop/--batch resumes it as it was (it used to fall back to
    the defaults: a batch-16 run went on at batch 4, a 64-pixel-crop run found no 256-pixel image)."""
    def trainer(*extra):
        args = build_parser().parse_args([str(data_dir), "--run-dir", str(tmp_path / "run"), "--N", "16", "--M", "24",
                                          "--warmup", "1", "--val-crop", "64", "--threads", "1", "--quiet", *extra])
        return Trainer(args)

    tr = trainer("--crop", "64", "--batch", "2")
    tr.train_step()
    tr.save()
    tr = trainer()
    assert (tr.args.crop, tr.args.batch) == (64, 2) and tr.sampler.crop == 64
    capsys.readouterr()
    tr = trainer("--batch", "3")
    assert (tr.args.crop, tr.args.batch) == (64, 3)
    assert "note: --batch 3, where the run had 2" in capsys.readouterr().err
    tr = trainer("--crop", "64", "--fresh")  # a new run in the same folder: nothing of the old one's shape
    assert (tr.args.crop, tr.args.batch) == (64, 4)
    tr.train_step()
    tr.save()
    # the model, the warm-up and the validation set are the run's too (a resume once fell back to
    # N=128 M=192 and failed, to a warm-up of 200 and jumped its rate, to another held-out split)
    args = build_parser().parse_args([str(data_dir), "--run-dir", str(tmp_path / "run"), "--threads", "1", "--quiet"])
    tr = Trainer(args)
    assert (tr.model.N, tr.model.M, tr.args.warmup, tr.args.val_crop, tr.args.val_images) == (16, 24, 1, 64, 8)
    with pytest.raises(SystemExit, match="leave out --arch/--N/--M to resume"):
        trainer("--N", "32")
    fresh = build_parser().parse_args([str(data_dir), "--run-dir", str(tmp_path / "new")])
    from aecodec.train import keep_run_shape

    keep_run_shape(fresh, None)
    assert (fresh.crop, fresh.batch) == (256, 4)


def test_a_warm_start_of_another_shape_says_what_it_did_not_copy(data_dir, tmp_path, capsys):
    from conftest import shipped_weights_file

    _trainer(data_dir, tmp_path / "run", "--init", str(shipped_weights_file()))  # N=16 M=24 from 128x192 weights
    err = capsys.readouterr().err
    assert "tensors copied" in err and "have other shapes here and were not copied" in err and "N=16 M=24" in err


def test_a_checkpoint_without_validation_draws_the_curves_too(data_dir, tmp_path):
    """An interrupted run (Ctrl-C: a checkpoint, no validation) still leaves its curves up to date."""
    import time

    tr = _trainer(data_dir, tmp_path / "run", "--log-every", "1")
    for _ in range(3):
        m = tr.train_step()
        tr.log({"kind": "train", "step": tr.step, "time": time.time(), "lr": 1e-3, **m})
    tr.checkpoint_and_validate(validate=False)
    assert Image.open(tmp_path / "run" / "curves.png").format == "PNG"


def test_a_kept_warmup_of_zero_stays_zero(data_dir, tmp_path):
    tr = _trainer(data_dir, tmp_path / "run", "--warmup", "0")
    tr.train_step()
    tr.save()
    args = build_parser().parse_args([str(data_dir), "--run-dir", str(tmp_path / "run"), "--threads", "1", "--quiet"])
    assert Trainer(args).args.warmup == 0  # not the default 200 (0 is falsy)


def _main_args(data, run_dir, *extra):
    return [str(data), "--run-dir", str(run_dir), "--N", "16", "--M", "24", "--crop", "64", "--batch", "2",
            "--warmup", "1", "--val-crop", "64", "--val-images", "1", "--threads", "1", "--quiet", *extra]


def _copy_data(data_dir, dest):
    import shutil

    shutil.copytree(data_dir, dest)
    return dest


def _hash_key(name):
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


def test_an_earlier_runs_files_without_last_pt_are_not_overwritten(data_dir, tmp_path, capsys):
    from aecodec.train import main

    run = tmp_path / "r"
    run.mkdir()
    (run / "best.pt").write_bytes(b"the user's best weights")
    (run / "log.jsonl").write_text('{"kind": "train", "step": 5, "loss": 1.0}\n')
    with pytest.raises(SystemExit) as e:  # a usage error, as argparse's own
        main(_main_args(data_dir, run, "--steps", "1"), prog="aecodec train")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "best.pt, log.jsonl but no last.pt" in err and "--fresh" in err and len(err.splitlines()) == 1
    assert (run / "best.pt").read_bytes() == b"the user's best weights"
    # --fresh: a new run, the old files moved aside, not lost
    assert main(_main_args(data_dir, run, "--steps", "1", "--fresh"), prog="aecodec train") == 0
    aside = [d for d in run.iterdir() if d.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / "best.pt").read_bytes() == b"the user's best weights"


def test_held_out_images_stay_held_out_as_the_folder_grows(data_dir, tmp_path):
    data = _copy_data(data_dir, tmp_path / "data")
    a = _trainer(data, tmp_path / "run", "--val-images", "1")
    held = [p.name for p in a.val_files]
    a.save()
    del a
    # an image whose name the hash rule alone would now hold out instead
    first = min(_hash_key(p.name) for p in data.iterdir())
    name = next(f"new{i}.png" for i in range(1000) if _hash_key(f"new{i}.png") < first)
    Image.open(data / "img0.png").save(data / name)
    b = _trainer(data, tmp_path / "run", "--val-images", "1")
    assert [p.name for p in b.val_files] == held
    # nor is it trained on: tools/heldout.py and --pack-to (the hash rule) hold it out
    from aecodec.train import training_split

    assert training_split(data, 1)[1] == [data / name]
    assert name not in [p.name for p in b.train_files] and len(b.train_files) == 3
    assert b.step == 0 and not b._new_validation  # the same validation: best.pt stays the bar


def test_a_run_stopped_before_validating_again_keeps_the_old_best(data_dir, tmp_path):
    data = _copy_data(data_dir, tmp_path / "data")
    a = _trainer(data, tmp_path / "run", "--val-images", "1")
    a.train_step()
    a.checkpoint_and_validate()
    old_best = (a.run_dir / "best.pt").read_bytes()
    (data / a.val_files[0].name).unlink()  # the held-out image is gone: another validation
    del a
    b = _trainer(data, tmp_path / "run", "--val-images", "1")
    assert b._new_validation
    b.train_step()
    b.checkpoint_and_validate(validate=False)  # Ctrl-C: a checkpoint, no validation
    assert (b.run_dir / "best-to-step-1.pt").read_bytes() == old_best
    assert not (b.run_dir / "best.pt").exists()


def test_another_validation_starts_a_new_best_and_keeps_the_old(data_dir, tmp_path, capsys):
    from aecodec.train import main

    run = tmp_path / "r"
    assert main(_main_args(data_dir, run, "--steps", "2"), prog="aecodec train") == 0
    old_best = (run / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(_main_args(data_dir, run, "--steps", "1", "--val-crop", "128"), prog="aecodec train") == 0
    err = capsys.readouterr().err
    assert "the next validation starts a new best" in err
    assert (run / "best-to-step-2.pt").read_bytes() == old_best
    assert (run / "best.pt").exists() and (run / "best.pt").read_bytes() != old_best


def test_a_damaged_training_image_is_left_out_and_said(data_dir, tmp_path, capsys):
    data = _copy_data(data_dir, tmp_path / "data")
    first = min(_hash_key(p.name) for p in data.iterdir())
    name = next(f"bad{i}.jpg" for i in range(1000) if _hash_key(f"bad{i}.jpg") > first)  # not the held-out one
    Image.open(data / "img0.png").save(data / name)
    blob = (data / name).read_bytes()
    (data / name).write_bytes(blob[:len(blob) // 2])  # a truncated JPEG: its header still reads
    tr = _trainer(data, tmp_path / "run", "--val-images", "1")
    assert name not in [p.name for p in tr.train_files + tr.val_files]
    assert len(tr.train_files) == 3
    assert f"1 training image(s) could not be decoded and are left out, e.g. {name}" in capsys.readouterr().err


def test_pack_names_never_collide(tmp_path):
    from aecodec.train import pack_names

    d = tmp_path
    files = [d / "a" / "x.png", d / "b" / "x.png", d / "x.jpg", d / "y.png", d / "c" / "z.tif"]
    names = pack_names(files, d)
    assert len(set(n.lower() for n in names)) == len(files)
    assert names[3:] == ["y.jpg", "z.jpg"]  # unique names as before (the GPU pack's split hashes them)


def test_pack_writes_every_image_of_same_named_ones(tmp_path, photo_crops):
    from aecodec.train import main

    data = tmp_path / "data"
    for i, sub in enumerate(["a", "b", "c", "d"] * 5):  # 20 images, 1 held out, same names in subfolders
        (data / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_crops[i % len(photo_crops)][:64, :64]).save(data / sub / f"IMG_{i // 4}.png")
    assert main([str(data), "--pack-to", str(tmp_path / "pack"), "--val-images", "1"], prog="aecodec train") == 0
    assert len(list((tmp_path / "pack").iterdir())) == 19
    for p in data.rglob("*.png"):  # nothing decodes: an error, not an empty pack
        p.write_bytes(p.read_bytes()[:200])
    assert main([str(data), "--pack-to", str(tmp_path / "pack2"), "--val-images", "1"], prog="aecodec train") == 1
    assert not (tmp_path / "pack2").exists()


def test_conflicts_with_the_run_are_usage_errors(data_dir, tmp_path, capsys):
    from aecodec.train import main

    run = tmp_path / "r"
    assert main(_main_args(data_dir, run, "--steps", "1"), prog="aecodec train") == 0
    capsys.readouterr()
    args = _main_args(data_dir, run, "--steps", "1")
    args[args.index("--N") + 1] = "8"
    assert main(args, prog="aecodec train") == 2
    assert main(_main_args(data_dir, run, "--steps", "1", "--lambdas", "0.001,0.01"), prog="aecodec train") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "not --N 8" in err[0] and "trains the levels" in err[-1]


def test_a_decay_that_never_began_is_said(data_dir, tmp_path, capsys):
    from aecodec.train import main

    args = _main_args(data_dir, tmp_path / "r", "--minutes", "0.03", "--decay-minutes", "0.01")
    args[args.index("--warmup") + 1] = "100000"
    assert main(args, prog="aecodec train") == 0
    assert "so the --decay-minutes decay never began" in capsys.readouterr().err
    assert not (tmp_path / "r" / "decay-start.pt").exists()


def test_a_failed_start_leaves_no_empty_folders(data_dir, tmp_path):
    from aecodec.train import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_main_args(empty, tmp_path / "new" / "deep" / "run", "--steps", "1"), prog="aecodec train") == 1
    assert not (tmp_path / "new").exists()


class _Payload:  # what a hostile checkpoint would hold: unpickling it runs code
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_with_python_objects_is_refused_not_unpickled(data_dir, tmp_path, capsys):
    from click.testing import CliRunner

    from aecodec.cli import main as cli
    from aecodec.train import main

    tr = _trainer(data_dir, tmp_path / "run")
    state = tr._state()
    state["config"]["note"] = _Payload(tmp_path / "pwned")
    torch.save(state, tmp_path / "evil.pt")
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "evil.pt"), str(tmp_path / "w.safetensors")],
                           catch_exceptions=False)
    assert r.exit_code == 1 and "holds Python objects besides tensors" in r.stderr, r.output
    assert main(_main_args(data_dir, tmp_path / "r2", "--steps", "1", "--init", str(tmp_path / "evil.pt")),
                prog="aecodec train") == 1
    assert "holds Python objects besides tensors" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "w.safetensors").exists()
