"""docs/FORMAT.md is complete and true: a decoder written from it alone (tests/spec_decoder.py)
decodes aecodec's files to the same symbols and, with the float64 reference synthesis, the same
pixels, and refuses what aecodec refuses."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

import aecodec
from aecodec.weights import weights_dir

import spec_decoder as spec


def _files(photo_crops):
    p = photo_crops[0]
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with_icc = Image.fromarray(p[:75, :100])
    with_icc.info["icc_profile"] = icc
    rgba = np.dstack([p[:50, :70], (np.arange(70)[None, :] * 3 % 256).repeat(50, 0).astype(np.uint8)])
    return {
        "rgb 64x64 q1": aecodec.compress(p[:64, :64], quality=1),
        "rgb 130x1 q8": aecodec.compress(p[:130, :1], quality=8),
        "rgb 100x75 icc q5": aecodec.compress(with_icc, quality=5),
        "grey 80x48 q4": aecodec.compress(Image.fromarray(p[:48, :80]).convert("L"), quality=4),
        "rgba 70x50 q6": aecodec.compress(rgba, quality=6),
        "1x1 q3": aecodec.compress(p[:1, :1], quality=3),
        "rgb 96x64 q7.25 (QFRC)": aecodec.compress(p[:64, :96], quality=7.25),
    }


@pytest.fixture(scope="module")
def files(photo_crops):
    return _files(photo_crops)


def test_a_decoder_written_from_the_spec_decodes_the_same_image(files):
    for name, data in files.items():
        ours = aecodec.decompress(data, precision="float64")
        theirs = spec.decode(data, weights_dir())
        assert theirs["mode"] == ours.mode, name
        arr = np.asarray(ours)
        colour = arr[..., :3] if ours.mode in ("RGB", "RGBA") else (arr[..., 0] if ours.mode == "LA" else arr)
        assert np.array_equal(theirs["pixels"], colour), name
        if theirs["alpha"] is not None:
            assert np.array_equal(theirs["alpha"], arr[..., -1]), name
        assert theirs["icc"] == ours.info.get("icc_profile"), name


def test_the_spec_decoder_gets_the_symbols_and_indexes_of_the_real_decoder(files):
    from aecodec import coding
    from aecodec.format import unpack
    from aecodec.weights import load_model

    data = files["rgb 100x75 icc q5"]
    c = unpack(data)
    model = load_model(c.header.model_id)
    y_hat, params = coding.decode_latents(model, c.chunks[b"ZSTR"], c.chunks[b"YSTR"], c.chunks.get(b"YIDX", b""),
                                          c.header.z_shape)
    theirs = spec.decode(data, weights_dir())
    assert theirs["indexes"] == params.indexes.reshape(-1).tolist()
    assert np.array_equal(np.asarray(theirs["y_symbols"], np.float32).reshape(y_hat.shape),
                          (y_hat - params.means).round().numpy())


def _refit_crc(b: bytes) -> bytes:
    return b[:-4] + struct.pack(">I", zlib.crc32(b[:-4]))


def test_both_decoders_refuse_the_same_damaged_files(files):
    good = files["rgb 64x64 q1"]
    n = good[6]
    chunk_at = 26 + n
    bad = {
        "flipped payload bit": good[:60] + bytes([good[60] ^ 1]) + good[61:],
        "quality 9": _refit_crc(good[:7 + n] + bytes([9]) + good[8 + n:]),
        "trailing byte": _refit_crc(good[:-4] + b"\0" + good[-4:]),
        "critical unknown chunk": None,
        "flags": _refit_crc(good[:5] + b"\x01" + good[6:]),
    }
    # an unknown critical chunk 'Xabc' and an unknown ancillary one 'xabc' appended to the chunk list
    def with_chunk(tag):
        body = good[chunk_at:-4] + tag + struct.pack(">I", 3) + b"abc"
        return _refit_crc(good[:25 + n] + bytes([good[25 + n] + 1]) + body + good[-4:])
    bad["critical unknown chunk"] = with_chunk(b"Xabc")
    for name, data in bad.items():
        with pytest.raises(aecodec.FormatError):
            aecodec.decompress(data)
        with pytest.raises(spec.SpecError):
            spec.decode(data, weights_dir())
    ok = with_chunk(b"xab\0")  # ancillary by its first byte, whatever the others: skipped by both
    assert np.array_equal(np.asarray(aecodec.decompress(ok, precision="float64")), spec.decode(ok, weights_dir())["pixels"])


def test_both_decoders_judge_the_side_chunks_and_strings_alike(files):
    """Refusals and tolerances beyond the header: YIDX, ALPH, iCCP, an invalid rANS string."""
    from aecodec.format import pack, unpack

    def rebuilt(data, replace=None, add=()):
        c = unpack(data)
        chunks = [(t, (replace or {}).get(t, b)) for t, b in c.chunks.items()] + list(add)
        chunks += [(t, b) for t, b in c.ancillary if t not in dict(add)]
        return pack(c.header, chunks)

    rgb, rgba, icc = files["rgb 64x64 q1"], files["rgba 70x50 q6"], files["rgb 100x75 icc q5"]
    n_alpha = 70 * 50
    ystr = unpack(rgb).chunks[b"YSTR"]
    refused = {
        "YSTR one byte changed": rebuilt(rgb, {b"YSTR": ystr[:-5] + bytes([ystr[-5] ^ 0x40]) + ystr[-4:]}),
        "YSTR a word short": rebuilt(rgb, {b"YSTR": ystr[:-4]}),
        "YIDX listing one position twice": rebuilt(rgb, add=[(b"YIDX", struct.pack(">IIBIB", 2, 0, 0, 0, 0))]),
        "YIDX of the wrong length": rebuilt(rgb, add=[(b"YIDX", struct.pack(">IIB", 2, 0, 0))]),
        "ALPH with a byte after its stream": rebuilt(rgba, {b"ALPH": zlib.compress(b"\xff" * n_alpha) + b"x"}),
        "ALPH one byte short": rebuilt(rgba, {b"ALPH": zlib.compress(b"\xff" * (n_alpha - 1))}),
    }
    for name, data in refused.items():
        with pytest.raises(aecodec.FormatError):
            aecodec.decompress(data)
        with pytest.raises(spec.SpecError):
            spec.decode(data, weights_dir())
    # an iCCP chunk that is not one clean stream: both drop the profile and decode the image
    profile = zlib.decompress(unpack(icc).ancillary_chunk(b"iCCP"))
    for blob in (zlib.compress(profile) + b"x", b"not zlib", zlib.compress(b"")):
        data = rebuilt(icc, add=[(b"iCCP", blob)])
        with pytest.warns(aecodec.AecodecWarning, match="ICC"):
            ours = aecodec.decompress(data, precision="float64")
        theirs = spec.decode(data, weights_dir())
        assert "icc_profile" not in ours.info and theirs["icc"] is None
        assert np.array_equal(np.asarray(ours), theirs["pixels"])


def test_both_decoders_judge_a_quality_between_levels_alike(files):
    """QFRC: the interpolated inverse gain as FORMAT.md writes it, and the same refusals."""
    good = files["rgb 96x64 q7.25 (QFRC)"]
    n = good[6]
    assert aecodec.info(good)["quality"] == 7.25 and b"QFRC" in aecodec.format.unpack(good).chunks
    at = good.index(b"QFRC")

    def qfrc(body: bytes, level: int = 7) -> bytes:
        data = good[:7 + n] + bytes([level]) + good[8 + n:at] + b"QFRC" + struct.pack(">I", len(body)) + body
        return _refit_crc(data + good[at + 9:-4] + good[-4:])

    assert qfrc(b"\x19") == good  # (the helper rebuilds the file exactly)
    other = qfrc(b"\x4b")  # 7.75: decodes, to other pixels, alike in both decoders
    a = np.asarray(aecodec.decompress(other, precision="float64"))
    assert np.array_equal(a, spec.decode(other, weights_dir())["pixels"])
    assert not np.array_equal(a, np.asarray(aecodec.decompress(good, precision="float64")))
    for body, level in [(b"\x00", 7), (b"\x64", 7), (b"\x19\x00", 7), (b"", 7), (b"\x19", 8), (b"\x19", 0)]:
        data = qfrc(body, level)
        with pytest.raises(aecodec.FormatError):
            aecodec.decompress(data)
        with pytest.raises(spec.SpecError):
            spec.decode(data, weights_dir())


def test_the_interpolated_inverse_gains_are_the_specs_to_the_bit():
    """Pixels are too coarse to pin FORMAT.md's float32 formula (a float64 interpolation moves a
    quarter of the gains by an ulp and no pixel): compare the gains themselves, every level and
    hundredth."""
    import torch

    from aecodec import coding
    from aecodec.weights import default_model_id, load_model

    model = load_model()
    w = spec.load_weights(weights_dir(), default_model_id())
    for level in range(1, model.levels):
        for frac in range(0, 100):
            ours = coding._gains(model, level - 1, frac)[1].reshape(-1)
            assert torch.equal(ours, spec.inverse_gain(w, level, frac)), (level, frac)
    assert torch.equal(coding._gains(model, model.levels - 1)[1].reshape(-1), spec.inverse_gain(w, model.levels))
