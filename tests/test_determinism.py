"""Determinism: what a decoder computes does not depend on threads, processes or the convolution
kernels (oneDNN on/off stands in for another CPU), and encoder/decoder cannot silently desync."""

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import aecodec
from aecodec import coding
from aecodec.format import FormatError, pack, unpack
from aecodec.weights import load_model

_PROBE = textwrap.dedent("""
    import hashlib, sys, numpy as np, torch
    threads, mkldnn, precision, path = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], sys.argv[4]
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
    import aecodec
    from aecodec import coding
    from aecodec.format import unpack
    from aecodec.weights import load_model
    data = open(path, "rb").read()
    c = unpack(data)
    m = load_model(c.header.model_id)
    y_hat, p = coding.decode_latents(m, c.chunks[b"ZSTR"], c.chunks[b"YSTR"], c.chunks.get(b"YIDX", b""),
                                     tuple(c.header.z_shape))
    img = np.asarray(aecodec.decompress(data, precision=precision))
    np.save(path + f".{threads}{int(mkldnn)}{precision}.npy", img)
    print(hashlib.sha256(y_hat.numpy().tobytes()).hexdigest(), hashlib.sha256(p.indexes.tobytes()).hexdigest(),
          hashlib.sha256(img.tobytes()).hexdigest())
""")


def _probe(path, threads, mkldnn, precision="float32"):
    r = subprocess.run([sys.executable, "-c", _PROBE, str(threads), "1" if mkldnn else "0", precision, str(path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()


@pytest.fixture(scope="module")
def coded(tmp_path_factory, photo_crops):
    path = tmp_path_factory.mktemp("det") / "img.aec"
    path.write_bytes(aecodec.compress(photo_crops[0][:128, :192], quality=5))
    return path


def test_latents_bit_exact_across_threads_processes_and_onednn(coded):
    """The entropy-decoded latents and the CDF choice never depend on threads or kernels;
    float32 pixels are bit-exact across threads and processes."""
    runs = {(t, mk): _probe(coded, t, mk) for t, mk in ((1, True), (2, True), (1, False))}
    again = _probe(coded, 2, True)  # another process, same settings
    lat = {k: v[:2] for k, v in runs.items()}
    assert len(set(map(tuple, lat.values()))) == 1, "latents / scale indexes differ"
    assert runs[(1, True)][2] == runs[(2, True)][2] == again[2], "pixels differ across threads or processes"
    # oneDNN off = other convolution kernels: float32 pixels may differ by one level, rarely
    a = np.load(str(coded) + ".11float32.npy").astype(int)
    b = np.load(str(coded) + ".10float32.npy").astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def test_float64_synthesis_pixels_bit_exact_with_onednn_on_and_off(coded):
    on = _probe(coded, 2, True, "float64")
    off = _probe(coded, 1, False, "float64")
    assert on == off, "float64 decode differs between oneDNN on and off"


def test_float64_and_float32_agree_to_one_level(coded):
    data = coded.read_bytes()
    a = np.asarray(aecodec.decompress(data)).astype(int)
    b = np.asarray(aecodec.decompress(data, precision="float64")).astype(int)
    assert np.abs(a - b).max() <= 1
    with pytest.raises(ValueError):
        aecodec.decompress(data, precision="float16")


# -- the desync guard ----------------------------------------------------------------------------------

class _Perturbed(torch.nn.Module):
    """h_s as another machine might compute it: the same, off by a relative ``eps`` here and there."""

    def __init__(self, inner, eps, seed=0):
        super().__init__()
        self.inner, self.eps, self.seed = inner, eps, seed

    def forward(self, x):
        out = self.inner(x)
        g = torch.Generator().manual_seed(self.seed)
        noise = (torch.rand(out.shape, generator=g, dtype=out.dtype) * 2 - 1) * self.eps
        return out * (1 + noise)


def _with_perturbed_hs(model, eps, fn, seed=0):
    cache = coding._cache(model)
    saved = cache.get("h_s64")
    cache["h_s64"] = _Perturbed(coding._h_s64(model), eps, seed)
    try:
        return fn()
    finally:
        cache["h_s64"] = saved


def _latents(model, c):
    return coding.decode_latents(model, c.chunks[b"ZSTR"], c.chunks[b"YSTR"], c.chunks.get(b"YIDX", b""),
                                 tuple(c.header.z_shape))


def test_guard_makes_decoder_immune_to_small_differences(photo_crops, monkeypatch):
    """With the tolerance widened to 1e-3 (so that it matters on a small image), a decoder whose
    entropy parameters differ from the encoder's by up to 1e-3 decodes the same latents; without
    the guard list the same difference would have flipped scale indexes (desync)."""
    model = load_model()
    monkeypatch.setattr(coding, "GUARD", 1e-3)
    data = aecodec.compress(photo_crops[-1][:128, :128], quality=6)
    c = unpack(data)
    assert b"YIDX" in c.chunks, "no latent near a table entry: the test image is too easy"
    y_ref, p_ref = _latents(model, c)
    y_alt, p_alt = _with_perturbed_hs(model, 0.9e-3, lambda: _latents(model, c))
    assert np.array_equal(p_ref.indexes, p_alt.indexes)  # hence the same symbols from the same string
    assert torch.equal(torch.round(y_ref - p_ref.means), torch.round(y_alt - p_alt.means))
    # the same perturbation without the guard list changes indexes
    indexes_unguarded = _with_perturbed_hs(
        model, 0.9e-3, lambda: coding.entropy_parameters(model, _z_hat(model, c), 0.0).indexes)
    assert not np.array_equal(indexes_unguarded, coding.entropy_parameters(model, _z_hat(model, c), 0.0).indexes)


def _z_hat(model, c):
    from aecodec import rans

    eb = model.entropy_bottleneck
    Hz, Wz = c.header.z_shape
    C = eb._quantized_cdf.shape[0]
    z = rans.decode(c.chunks[b"ZSTR"], np.repeat(np.arange(C, dtype=np.uint16), Hz * Wz), rans.Tables.of(eb))
    return torch.from_numpy(z.astype(np.float32).reshape(1, C, Hz, Wz)) + eb._get_medians().reshape(1, -1, 1, 1)


def test_guard_detects_larger_differences(photo_crops, monkeypatch):
    """A decoder whose entropy parameters differ by more than the tolerance refuses the file
    instead of decoding garbage."""
    model = load_model()
    monkeypatch.setattr(coding, "GUARD", 1e-4)
    data = aecodec.compress(photo_crops[-1][:128, :128], quality=6)
    with pytest.raises(FormatError, match="differ from the encoder"):
        _with_perturbed_hs(model, 5e-2, lambda: aecodec.decompress(data))


def test_guard_list_round_trip_and_validation(photo_crops):
    model = load_model()
    data = aecodec.compress(photo_crops[0][:64, :64], quality=3)
    c = unpack(data)
    _, p = _latents(model, c)
    pos = np.array([0, 7, 100, p.indexes.size - 1], np.int64)
    blob = coding.pack_guard(pos, p.indexes)
    got_pos, got_idx = coding.unpack_guard(blob, p.indexes.size, 64)
    assert np.array_equal(got_pos, pos) and np.array_equal(got_idx, p.indexes.reshape(-1)[pos])
    # a file that lists latents with the index the decoder predicts anyway decodes identically
    listed = pack(c.header, list(c.chunks.items()) + [(b"YIDX", blob)])
    assert aecodec.decompress(listed).tobytes() == aecodec.decompress(data).tobytes()
    twice = b"\x00\x00\x00\x02" + blob[4:9] + blob[4:9]  # the same position listed twice
    for bad in (blob[:-1], blob[:4], b"\x00\x00\x00\x00", blob[:4] + blob[9:] + blob[4:9],
                struct_entry(p.indexes.size, 0), struct_entry(0, 64), twice):
        with pytest.raises(FormatError, match="YIDX"):
            coding.unpack_guard(bad, p.indexes.size, 64)
    # a listed index may differ from the decoder's by one table (the tie it settles), not by two
    i0 = int(p.indexes.reshape(-1)[0])
    for delta, ok in ((1 if i0 < 63 else -1, True), (2 if i0 < 62 else -2, False)):
        entry = struct_entry(0, i0 + delta)
        damaged = pack(c.header, list(c.chunks.items()) + [(b"YIDX", entry)])
        if ok:  # decodes (to another image: the latent is read with a neighbouring table)
            try:
                aecodec.decompress(damaged)
            except FormatError as e:  # the strings may then not be a valid encoding: that is the other check
                assert "YIDX" not in str(e)
        else:
            with pytest.raises(FormatError, match="far from"):
                aecodec.decompress(damaged)


def struct_entry(pos, idx):
    import struct

    return struct.pack(">IIB", 1, pos, idx)


def test_entropy_parameters_match_the_models_own(photo_crops):
    """The tiled float64 path picks exactly the indexes and means of model._entropy_parameters."""
    model = load_model()
    c = unpack(aecodec.compress(photo_crops[0][:192, :256], quality=5))
    z_hat = _z_hat(model, c)
    idx_ref, means_ref = model._entropy_parameters(z_hat)
    for tile in (1000, 4):  # untiled, and z tiles of 1x1 with margins
        p = coding.entropy_parameters(model, z_hat, 0.0, tile=tile)
        assert np.array_equal(p.indexes, idx_ref[0].numpy())
        assert torch.equal(p.means, means_ref) or torch.allclose(p.means, means_ref, rtol=0, atol=1e-6)
    h = hashlib.sha256(p.indexes.tobytes()).hexdigest()
    assert h == hashlib.sha256(idx_ref[0].numpy().astype(np.uint8).tobytes()).hexdigest()


def test_the_coders_tables_follow_the_model_s_buffers():
    """rans.Tables caches the numpy copy of a model's CDF tables: a buffer changed in place (or
    replaced by load_state_dict) must not leave the coder on the old tables."""
    import copy

    from aecodec import rans

    gc = copy.deepcopy(load_model().gaussian_conditional)  # not the process's shared model
    t = rans.Tables.of(gc)
    assert rans.Tables.of(gc) is t  # unchanged: cached
    with torch.no_grad():
        gc._quantized_cdf[0, 1] += 1
    assert rans.Tables.of(gc).cdf[0, 1] == t.cdf[0, 1] + 1
    gc._offset = gc._offset.clone() - 1
    assert (rans.Tables.of(gc).offsets == t.offsets - 1).all()
