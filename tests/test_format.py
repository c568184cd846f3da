"""The container: every field round-trips; damage of any kind is refused with FormatError."""

import struct
import zlib

import pytest

from aecodec.format import MAGIC, FormatError, Header, pack, unpack


def _file(mode="RGB", extra=()):
    h = Header(model_id="msh-test", quality=3, mode=mode, width=70, height=5, y_shape=(8, 8), z_shape=(2, 2))
    chunks = [(b"ZSTR", b"z" * 7), (b"YSTR", b"y" * 40), *extra]
    if mode in ("LA", "RGBA"):
        chunks.append((b"ALPH", zlib.compress(b"\xff" * 350)))
    return h, pack(h, chunks)


def test_roundtrip_fields():
    h, data = _file()
    c = unpack(data)
    assert c.header == h
    assert c.chunks[b"YSTR"] == b"y" * 40 and c.chunks[b"ZSTR"] == b"z" * 7
    assert data[:4] == MAGIC
    assert c.header_bytes == len(data) - 47


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_modes(mode):
    h, data = _file(mode)
    assert unpack(data).header.mode == mode


def test_bad_magic():
    _, data = _file()
    with pytest.raises(FormatError, match="magic"):
        unpack(b"\x89PNG" + data[4:])
    with pytest.raises(FormatError, match="magic"):
        unpack(b"")


def test_unknown_version():
    _, data = _file()
    bad = bytearray(data)
    bad[4] = 99
    with pytest.raises(FormatError, match="version 99"):
        unpack(bytes(bad))


def test_every_truncation_refused():
    _, data = _file()
    for n in range(len(data)):
        with pytest.raises(FormatError):
            unpack(data[:n])


def test_every_bit_flip_refused():
    _, data = _file()
    for i in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                unpack(bytes(bad))


def test_trailing_junk_refused():
    _, data = _file()
    with pytest.raises(FormatError):
        unpack(data + b"\x00")
    with pytest.raises(FormatError):
        unpack(data + data)


def test_crc_mismatch_named():
    _, data = _file()
    bad = bytearray(data)
    bad[-10] ^= 0x40  # inside the YSTR payload
    with pytest.raises(FormatError, match="CRC"):
        unpack(bytes(bad))


def test_ancillary_chunk_skipped_critical_refused():
    _, data = _file(extra=[(b"note", b"hello")])
    c = unpack(data)
    assert c.ancillary == [(b"note", b"hello")]
    _, data = _file(extra=[(b"NOTE", b"hello")])
    with pytest.raises(FormatError, match="critical"):
        unpack(data)


def test_missing_chunk_refused():
    h = Header(model_id="m", quality=1, mode="RGB", width=1, height=1, y_shape=(4, 4), z_shape=(1, 1))
    with pytest.raises(FormatError, match="YSTR"):
        unpack(pack(h, [(b"ZSTR", b"z")]))
    h.mode = "RGBA"
    with pytest.raises(FormatError, match="alpha"):
        unpack(pack(h, [(b"ZSTR", b"z"), (b"YSTR", b"y")]))


def test_formaterror_is_valueerror():
    assert issubclass(FormatError, ValueError)


def test_header_is_big_endian_documented_layout():
    h, data = _file()
    # magic, version, flags, model id length, model id
    assert data[4] == 1 and data[5] == 0 and data[6] == len("msh-test")
    off = 7 + len("msh-test")
    assert struct.unpack(">BBII", data[off:off + 10]) == (3, 3, 70, 5)
    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_side_chunks():
    """YIDX is a known critical chunk, iCCP a known ancillary one (once each); ALPH only with alpha."""
    _, data = _file(extra=[(b"YIDX", b"\x00\x00\x00\x01\x00\x00\x00\x05\x03"), (b"iCCP", b"profile")])
    c = unpack(data)
    assert c.chunks[b"YIDX"] == b"\x00\x00\x00\x01\x00\x00\x00\x05\x03"
    assert c.ancillary_chunk(b"iCCP") == b"profile" and c.ancillary_chunk(b"note") is None
    assert c.header_bytes == len(data) - 47  # everything but the two entropy-coded strings
    _, data = _file(extra=[(b"iCCP", b"a"), (b"iCCP", b"b")])
    with pytest.raises(FormatError, match="duplicate"):
        unpack(data)
    _, data = _file(extra=[(b"note", b"a"), (b"note", b"b")])  # unknown ancillary: kept, not judged
    assert len(unpack(data).ancillary) == 2
    _, data = _file(extra=[(b"ALPH", zlib.compress(b"\xff" * 350))])
    with pytest.raises(FormatError, match="alpha"):
        unpack(data)
    # a second copy of a known chunk is refused, not "last one wins"
    for mode, tag in (("RGB", b"YSTR"), ("RGB", b"ZSTR"), ("RGB", b"YIDX"), ("RGBA", b"ALPH")):
        extra = [(tag, b"x")] + ([(b"YIDX", b"y")] if tag == b"YIDX" else [])
        _, data = _file(mode, extra=extra)
        with pytest.raises(FormatError, match="duplicate"):
            unpack(data)


def test_a_model_id_that_is_not_printable_is_refused():
    """`aecodec info` prints the model id: a CRC-valid file must not smuggle escape sequences into a terminal."""
    h = Header(model_id="m\x1b[2J", quality=3, mode="RGB", width=70, height=5, y_shape=(8, 8), z_shape=(2, 2))
    with pytest.raises(FormatError, match="printable"):
        unpack(pack(h, [(b"ZSTR", b"z" * 4), (b"YSTR", b"y" * 4)]))


def test_dimensions_limited_by_the_latent_fields():
    from aecodec.format import MAX_DIMENSION

    assert MAX_DIMENSION == 16383 * 64  # y_w = ceil(w / 64) * 4 must fit 16 bits
    h = Header(model_id="m", quality=1, mode="RGB", width=MAX_DIMENSION + 1, height=1, y_shape=(4, 4),
               z_shape=(1, 1))
    with pytest.raises(ValueError):
        pack(h, [(b"ZSTR", b"z"), (b"YSTR", b"y")])
    h.width = MAX_DIMENSION
    body = bytearray(pack(h, [(b"ZSTR", b"z"), (b"YSTR", b"y")]))
    off = 7 + 1 + 2
    body[off:off + 4] = struct.pack(">I", MAX_DIMENSION + 1)
    body[-4:] = struct.pack(">I", zlib.crc32(bytes(body[:-4])))
    with pytest.raises(FormatError, match="impossible size"):
        unpack(bytes(body))


def _spec_rans_decode(string: bytes, table_rows, tables):
    """A decoder for one ZSTR/YSTR written from docs/FORMAT.md ('Entropy-coded strings') alone,
    in plain Python: if the spec is complete, it reads aecodec's real strings."""
    import numpy as np

    words = np.frombuffer(string, dtype="<u4").tolist()
    L, mask = 1 << 31, (1 << 16) - 1
    x, pos = words[0] | (words[1] << 32), 2

    def bits(n):
        nonlocal x, pos
        v = x & ((1 << n) - 1)
        x >>= n
        if x < L:
            x, pos = (x << 32) | words[pos], pos + 1
        return v

    cdfs, lengths, offsets = tables
    out = []
    for i in table_rows:
        cdf, mx = cdfs[i], lengths[i] - 2
        cum = x & mask
        s = next(k for k in range(lengths[i] - 1) if cdf[k] <= cum < cdf[k + 1])
        x = (cdf[s + 1] - cdf[s]) * (x >> 16) + cum - cdf[s]
        if x < L:
            x, pos = (x << 32) | words[pos], pos + 1
        v = s
        if s == mx:  # the escape: a run of 4-bit counts, then the digits, least significant first
            n = c = bits(4)
            while c == 15:
                c = bits(4)
                n += c
            raw = sum(bits(4) << (4 * j) for j in range(n))
            v = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + mx
        out.append(v + offsets[i])
    assert pos == len(words)  # every word read, none left over
    return out


def test_the_spec_alone_decodes_real_strings():
    """FORMAT.md's description of the rANS strings, implemented independently, decodes the
    strings aecodec writes (z with the factorised prior, y with the scale indexes), and the
    escape for out-of-range values."""
    import numpy as np
    import torch

    import aecodec
    from aecodec import coding, rans
    from aecodec.weights import load_model

    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(128, 60, (64, 64, 3)), 0, 255).astype(np.uint8)  # noise: wide symbols
    c = unpack(aecodec.compress(img, quality=8))
    model = load_model(c.header.model_id)
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    tz, ty = rans.Tables.of(eb), rans.Tables.of(gc)
    Hz, Wz = c.header.z_shape
    z_rows = np.repeat(np.arange(tz.n), Hz * Wz)
    z_sym = _spec_rans_decode(c.chunks[b"ZSTR"], z_rows, tz._lists)
    assert z_sym == rans.decode(c.chunks[b"ZSTR"], z_rows, tz).tolist()
    y_hat, params = coding.decode_latents(model, c.chunks[b"ZSTR"], c.chunks[b"YSTR"], c.chunks.get(b"YIDX", b""),
                                          tuple(c.header.z_shape))
    idx = params.indexes.reshape(-1)
    y_sym = _spec_rans_decode(c.chunks[b"YSTR"], idx.tolist(), ty._lists)
    assert y_sym == torch.round(y_hat - params.means).reshape(-1).long().tolist()
    # The escape (values outside a table's range), with the encoder aecodec writes files with:
    # whether a photo's latents reach it depends on the weights, so the symbols are forced
    # out of range here, both sides and up to large magnitudes (several 4-bit groups).
    lo = np.array(ty.offsets)[idx]
    hi = lo + np.array(ty.lengths)[idx] - 2  # the first value that needs the escape
    forced = np.array(y_sym)
    forced[0::7] = lo[0::7] - 1 - np.arange(forced[0::7].size) % 300
    forced[3::11] = hi[3::11] + np.arange(forced[3::11].size) * 97 % 70000
    string = rans.encode(forced, idx, ty)
    assert _spec_rans_decode(string, idx.tolist(), ty._lists) == forced.tolist()


def test_the_spec_alone_gives_the_scale_indexes(photo_crops):
    """FORMAT.md's rule for the scale indexes (decoding step 4), followed literally: z_hat from
    the symbols and the stored medians, the hyper-synthesis in float64, the scale raised to the
    *stored* float32 lower bound, the entries of the table strictly below it counted.  It gives
    the decoder's indexes; the decimal 0.11 as the bound would not (a scale at the bound is
    index 0, not 1)."""
    import copy

    import numpy as np
    import torch

    import aecodec
    from aecodec import coding, rans
    from aecodec.weights import load_model

    c = unpack(aecodec.compress(photo_crops[0][:128, :192], quality=1))
    model = load_model(c.header.model_id)
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    tz = rans.Tables.of(eb)
    Hz, Wz = c.header.z_shape
    z_sym = rans.decode(c.chunks[b"ZSTR"], np.repeat(np.arange(tz.n), Hz * Wz), tz)
    medians = eb.quantiles[:, 0, 1].detach()
    z_hat = torch.tensor(np.array(z_sym), dtype=torch.float32).reshape(1, tz.n, Hz, Wz) + medians.view(1, -1, 1, 1)
    with torch.no_grad():
        scales = copy.deepcopy(model.h_s).double()(z_hat.double())[:, : model.M].reshape(-1, 1)
    table = gc.scale_table.double()[:63].view(1, -1)
    bound = float(gc.lower_bound_scale.bound)  # the stored float32
    assert bound == float(gc.scale_table[0]) and bound != 0.11
    spec = (table < scales.clamp_min(bound)).sum(1).numpy()
    _, params = coding.decode_latents(model, c.chunks[b"ZSTR"], c.chunks[b"YSTR"], c.chunks.get(b"YIDX", b""),
                                      (Hz, Wz))
    assert b"YIDX" not in c.chunks  # (else the listed latents would take the listed index)
    assert np.array_equal(spec, params.indexes.reshape(-1))
    decimal = (table < scales.clamp_min(0.11)).sum(1).numpy()
    assert (decimal != spec).mean() > 0.01  # the wording matters
