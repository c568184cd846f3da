#!/usr/bin/env python
"""Fuzz harness for the .aec decoder.

Mutates valid seed files (bit flips, truncation, junk, chunk payloads replaced
by garbage, header fields changed, chunks added/removed/duplicated, splices,
plain random bytes), usually re-computing the CRC so that the damage reaches
the entropy decoder and the transforms, and checks the one property that
matters: ``aecodec.decompress`` either returns an image of the size and mode
its header states or raises ``FormatError``; ``aecodec.info`` likewise.  Any
other exception, a crash (the process dies) or a hang (watchdog) is a failure.
A damaged file whose CRC was *not* fixed must never decode.

    python tools/fuzz_decoder.py --seconds 1800            # a long run
    python tools/fuzz_decoder.py --seconds 60 --seed 7     # reproducible
    python tools/fuzz_decoder.py --engine hypothesis --seconds 600

The short run in the test suite is tests/test_fuzz.py (hypothesis drives the
same mutator).  The input being tried is written to OUT/current.aec before
each execution, so a crash leaves it behind; failures are saved to OUT.
"""

from __future__ import annotations

import argparse
import faulthandler
import random
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

MAX_PIXELS = 2**21  # decode limit during fuzzing: bigger claims are refused quickly (and must be)
HANG_SECONDS = 120  # one execution longer than this is a hang


# -- seeds ---------------------------------------------------------------------------------------------

def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 7 + yy * 3) % 256, (yy * 5) % 256, ((xx - yy) * 2) % 256], axis=2)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def seed_files() -> List[bytes]:
    """Small valid files covering every mode, chunk type and a few qualities."""
    import aecodec
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = Image.fromarray(_photo(16, 16, 3))
    rgb.info["icc_profile"] = icc
    seeds = [
        aecodec.compress(_photo(8, 8), quality=1),
        aecodec.compress(_photo(48, 64, 1), quality=6),
        aecodec.compress(np.dstack([_photo(13, 20, 2), np.arange(260, dtype=np.uint8).reshape(13, 20)]), quality=3),
        aecodec.compress(Image.fromarray(_photo(1, 1)[:, :, 0], "L"), quality=8),
        aecodec.compress(Image.fromarray(np.dstack([_photo(70, 5)[:, :, 0], _photo(70, 5)[:, :, 1]]), "LA"), quality=2),
        aecodec.compress(rgb, quality=4),
        aecodec.compress(_photo(1, 300, 4), quality=5),
        aecodec.compress(_photo(40, 72, 5), quality=7.5),  # between two levels: a QFRC chunk
    ]
    seeds.append(with_guard_entries(seeds[1], 5))
    return seeds


def with_guard_entries(data: bytes, count: int) -> bytes:
    """A valid file whose YIDX chunk lists some latents with the index the decoder predicts anyway."""
    from aecodec import coding
    from aecodec.format import pack, unpack
    from aecodec.weights import load_model

    c = unpack(data)
    model = load_model(c.header.model_id)
    _, p = coding.decode_latents(model, c.chunks[b"ZSTR"], c.chunks[b"YSTR"], b"", tuple(c.header.z_shape))
    pos = np.unique(np.random.default_rng(0).integers(0, p.indexes.size, count)).astype(np.int64)
    chunks = [(t, b) for t, b in c.chunks.items()] + [(b"YIDX", coding.pack_guard(pos, p.indexes))]
    return pack(c.header, chunks + c.ancillary)


# -- mutation ------------------------------------------------------------------------------------------

def _fix_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _chunks(data: bytes) -> Tuple[bytes, List[Tuple[bytes, bytes]]]:
    """(header bytes before n_chunks, [(tag, payload)]) of a valid file."""
    mlen = data[6]
    off = 7 + mlen + 18
    n = data[off]
    pos, out = off + 1, []
    for _ in range(n):
        tag, (ln,) = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])
        out.append((tag, data[pos + 8:pos + 8 + ln]))
        pos += 8 + ln
    return data[:off], out


def _assemble(head: bytes, chunks: List[Tuple[bytes, bytes]]) -> bytes:
    body = bytearray(head) + bytes([min(len(chunks), 255)])
    for tag, blob in chunks:
        body += tag + struct.pack(">I", len(blob)) + blob
    return _fix_crc(bytes(body))


def _garbage(rng: random.Random, n: int) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(n)
    if kind == 1:
        return bytes([rng.choice((0x00, 0xFF))]) * n
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(min(n, 16))) * (n // 16 + 1)
    return b"\xff" * (n // 2) + rng.randbytes(n - n // 2)


def mutate(rng: random.Random, seeds: List[bytes]) -> Tuple[bytes, bool]:
    """A mutated file and whether its CRC is valid by construction (a 'crafted' file)."""
    data = rng.choice(seeds)
    op = rng.randrange(12)
    if op == 0:  # bit flips, CRC not fixed
        b = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 8))):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), False
    if op == 1:  # truncation
        return data[:rng.randrange(len(data))], False
    if op == 2:  # trailing junk
        return data + rng.randbytes(rng.choice((1, 4, 100))), False
    if op == 3:  # random bytes, with or without the magic
        junk = rng.randbytes(rng.randrange(0, 400))
        return (b"\x8aAEC" + junk) if rng.random() < 0.5 else junk, False
    head, chunks = _chunks(data)
    if op == 4:  # bit flips inside one payload, CRC fixed
        i = rng.randrange(len(chunks))
        tag, blob = chunks[i]
        if blob:
            b = bytearray(blob)
            for _ in range(rng.choice((1, 1, 3, 20))):
                j = rng.randrange(len(b))
                b[j] ^= 1 << rng.randrange(8)
            chunks[i] = (tag, bytes(b))
        return _assemble(head, chunks), True
    if op == 5:  # payload replaced by garbage of the same or another length
        i = rng.randrange(len(chunks))
        tag, blob = chunks[i]
        n = rng.choice((len(blob), 0, 1, 3, 7, 8, 9, max(1, len(blob) // 2), len(blob) + 1, len(blob) * 4 + 64))
        chunks[i] = (tag, _garbage(rng, n))
        return _assemble(head, chunks), True
    if op == 6:  # payload truncated or extended, CRC fixed
        i = rng.randrange(len(chunks))
        tag, blob = chunks[i]
        cut = rng.randrange(len(blob) + 1)
        chunks[i] = (tag, blob[:cut] if rng.random() < 0.7 else blob + _garbage(rng, rng.choice((1, 4, 64))))
        return _assemble(head, chunks), True
    if op == 7:  # header fields changed, CRC fixed
        b = bytearray(head)
        mlen = b[6]
        field = rng.randrange(7)
        base = 7 + mlen
        if field == 0:
            b[base] = rng.choice((0, 1, 8, 9, 255))  # quality
        elif field == 1:
            b[base + 1] = rng.choice((0, 1, 2, 3, 4, 5, 255))  # mode
        elif field in (2, 3):  # width / height
            o = base + 2 + 4 * (field - 2)
            v = rng.choice((0, 1, 63, 64, 65, 1000, 5000, 2**20, 2**31 - 1, 2**32 - 1, rng.randrange(2**32)))
            b[o:o + 4] = struct.pack(">I", v)
        elif field == 4:  # latent shapes
            o = base + 10 + 2 * rng.randrange(4)
            b[o:o + 2] = struct.pack(">H", rng.choice((0, 1, 2, 4, 5, 65535, rng.randrange(65536))))
        elif field == 5:  # model id
            b[7 + rng.randrange(mlen)] = rng.randrange(32, 127)
        else:  # version / flags
            b[4 + rng.randrange(2)] = rng.randrange(256)
        return _assemble(bytes(b), chunks), True
    if op == 8:  # a consistent size change: width/height and latent shapes agree, payload does not
        b = bytearray(head)
        base = 7 + b[6]
        w, h = rng.choice((1, 8, 64, 65, 129, 700)), rng.choice((1, 8, 64, 65, 129, 300))
        ph, pw = -(-h // 64), -(-w // 64)
        b[base + 2:base + 10] = struct.pack(">II", w, h)
        b[base + 10:base + 18] = struct.pack(">HHHH", ph * 4, pw * 4, ph, pw)
        return _assemble(bytes(b), chunks), True
    if op == 9:  # chunks removed, duplicated, swapped, added
        k = rng.randrange(5)
        if k == 0 and chunks:
            chunks.pop(rng.randrange(len(chunks)))
        elif k == 1 and chunks:
            chunks.append(rng.choice(chunks))
        elif k == 2 and len(chunks) > 1:
            i, j = rng.sample(range(len(chunks)), 2)
            chunks[i] = (chunks[i][0], chunks[j][1])
        elif k == 3:
            tag = rng.choice((b"ALPH", b"YIDX", b"QFRC", b"iCCP", b"note", b"ZZZZ", b"\x00\x00\x00\x00"))
            chunks.append((tag, _garbage(rng, rng.choice((0, 1, 4, 5, 9, 100)))))
        else:
            rng.shuffle(chunks)
        return _assemble(head, chunks), True
    if op == 10:  # splice: header of one seed, chunks of another
        other = _chunks(rng.choice(seeds))[1]
        return _assemble(head, other), True
    # op 11: a valid YIDX chunk made inconsistent
    entries = rng.randrange(1, 6)
    blob = struct.pack(">I", entries) + b"".join(
        struct.pack(">IB", rng.choice((0, 1, 5, rng.randrange(1 << 16), 2**32 - 1)), rng.randrange(70))
        for _ in range(entries))
    chunks = [c for c in chunks if c[0] != b"YIDX"] + [(b"YIDX", blob)]
    return _assemble(head, chunks), True


# -- the property --------------------------------------------------------------------------------------

class Failure(AssertionError):
    pass


def check(data: bytes, crafted: bool = True, seeds=(), max_pixels: int = MAX_PIXELS) -> str:
    """Run the decoder on ``data``; return the outcome class, raise Failure on a violation.

    ``crafted``: the CRC was recomputed after the damage (else decoding is a
    violation, unless ``data`` is one of the unmodified ``seeds``).
    """
    import aecodec
    from aecodec.format import FormatError, unpack

    try:
        aecodec.info(data)
    except FormatError:
        pass
    except Exception as e:  # noqa: BLE001 - this is the point
        raise Failure(f"info raised {type(e).__name__}: {e}") from e
    try:
        im = aecodec.decompress(data, max_pixels=max_pixels)
    except FormatError as e:
        return "refused: " + _kind(str(e))
    except Exception as e:  # noqa: BLE001
        raise Failure(f"decompress raised {type(e).__name__}: {e}") from e
    h = unpack(data).header
    if im.size != (h.width, h.height) or im.mode != h.mode:
        raise Failure(f"decoded {im.size} {im.mode}, header says {h.width}x{h.height} {h.mode}")
    if data in seeds:
        return "decoded (unchanged)"
    if not crafted:
        raise Failure("a damaged file (CRC not recomputed) decoded without error")
    return "decoded (a valid file crafted from the damage)"


def _kind(msg: str) -> str:
    """A FormatError message without its particulars (numbers, names), for counting."""
    import re

    msg = re.sub(r"'[^']*'|\"[^\"]*\"|b'[^']*'", "...", msg)
    msg = re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?", "N", msg)
    return msg.split(" (")[0][:70]


# -- drivers -------------------------------------------------------------------------------------------

def run_random(seconds: float, seed: int, out: Path, seeds: List[bytes], log: Callable = print) -> Dict:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: Counter = Counter()
    failures = 0
    t0 = time.time()
    n = 0
    while time.time() - t0 < seconds:
        data, crafted = mutate(rng, seeds)
        (out / "current.aec").write_bytes(data)
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        try:
            outcomes[check(data, crafted, seeds)] += 1
        except Failure as e:
            failures += 1
            name = out / f"failure-{seed}-{n}.aec"
            name.write_bytes(data)
            log(f"FAILURE {name}: {e}")
        finally:
            faulthandler.cancel_dump_traceback_later()
        n += 1
        if n % 200 == 0:
            log(f"{n} executions, {time.time() - t0:.0f} s, {failures} failures")
    return {"executions": n, "seconds": time.time() - t0, "failures": failures, "outcomes": dict(outcomes)}


def run_hypothesis(seconds: float, seed: int, out: Path, seeds: List[bytes], log: Callable = print,
                   batch: int = 200) -> Dict:
    """Hypothesis drives the mutator: batches of ``batch`` examples, a new seed per batch, until time is up."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    stats: Counter = Counter()
    out.mkdir(parents=True, exist_ok=True)
    n = [0]
    t0 = time.time()
    failures = 0
    while time.time() - t0 < seconds:
        @hseed(seed)
        @settings(max_examples=batch, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.randoms(use_true_random=False))
        def prop(r):
            data, crafted = mutate(r, seeds)
            (out / "current.aec").write_bytes(data)
            stats[check(data, crafted, seeds)] += 1
            n[0] += 1

        try:
            prop()
        except Failure as e:  # hypothesis shrank it and re-raised
            failures += 1
            (out / f"failure-hypothesis-{seed}.aec").write_bytes((out / "current.aec").read_bytes())
            log(f"FAILURE (hypothesis seed {seed}): {e}")
        seed += 1
        log(f"{n[0]} executions, {time.time() - t0:.0f} s, {failures} failures")
    return {"executions": n[0], "seconds": time.time() - t0, "failures": failures, "outcomes": dict(stats)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    ap.add_argument("--seed", type=int, default=None,
                    help="seed of the mutations (None: from the clock; printed, to repeat a run)")
    ap.add_argument("--engine", choices=("random", "hypothesis"), default="random",
                    help="random mutations of seed files, or hypothesis-driven (needs hypothesis)")
    ap.add_argument("--out", type=Path, default=Path("fuzz-out"),
                    help="folder for the log and any failing inputs (made if missing)")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    import warnings

    warnings.simplefilter("ignore")
    seeds = seed_files()
    print(f"fuzzing the decoder for {args.seconds:.0f} s, engine {args.engine}, seed {args.seed}, "
          f"{len(seeds)} seed files", flush=True)
    run = run_random if args.engine == "random" else run_hypothesis
    res = run(args.seconds, args.seed, args.out, seeds, log=lambda m: print(m, flush=True))
    print(f"{res['executions']} executions in {res['seconds']:.0f} s, {res['failures']} failures")
    for k, v in sorted(res["outcomes"].items(), key=lambda kv: -kv[1]):
        print(f"  {v:7d}  {k}")
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
