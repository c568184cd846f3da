"""compressai's rANS coder, used safely.

* Encoding runs in process (our own symbols, checked to be in range first).
* Decoding runs in a separate worker process (``_rans_worker.py``) with a time
  limit, because compressai's C++ decoder does no bounds checking: a short or
  crafted string makes it read past its buffer (seen: segmentation faults) or
  loop for a long time.  A crash, a hang or an error of the worker becomes a
  :class:`~aecodec.format.FormatError`.
* Every decoded string is re-encoded and must come back byte for byte: a
  string that is not exactly what this encoder writes for the decoded symbols
  (truncated, padded, garbage, read past its end) is refused.  rANS is a
  bijection between symbol sequences and the strings the encoder produces, so
  this check accepts exactly the strings an honest encoder can write.

Symbols, CDF indexes and tables are those of compressai's EntropyModel
(``_quantized_cdf``, ``_cdf_length``, ``_offset``); the strings are identical to
what ``EntropyModel.compress`` produces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .format import FormatError

# Largest magnitude of a symbol (value - offset) either side accepts.  Real
# latents are a few hundred at most; the limit keeps compressai's bypass coder
# (4-bit groups) well inside 32-bit arithmetic.
SYMBOL_LIMIT = 1 << 24
CHUNK = 1 << 20  # symbols per list conversion (bounds the memory of Python lists)
# The worker gets BASE + PER_SYMBOL * n seconds; a real decode needs a small fraction.
TIMEOUT_BASE_S = float(os.environ.get("AECODEC_RANS_TIMEOUT_BASE", "60"))
TIMEOUT_PER_SYMBOL_S = 5e-6

_WORKER = Path(__file__).with_name("_rans_worker.py")


@dataclass
class Tables:
    """The CDF tables of one entropy model, as plain arrays."""

    cdf: np.ndarray  # int32, n_cdfs x width
    lengths: np.ndarray  # int32, n_cdfs
    offsets: np.ndarray  # int32, n_cdfs

    @classmethod
    def of(cls, entropy_model) -> "Tables":
        """The tables of a compressai EntropyModel (cached until its buffers change)."""
        bufs = (entropy_model._quantized_cdf, entropy_model._cdf_length, entropy_model._offset)
        key = tuple((b.data_ptr(), b._version, tuple(b.shape)) for b in bufs)
        cache = getattr(entropy_model, "_aecodec_tables", None)
        if cache is None or cache._key != key:
            cache = cls(
                np.ascontiguousarray(bufs[0].cpu().numpy().astype(np.int32)),
                np.ascontiguousarray(bufs[1].reshape(-1).cpu().numpy().astype(np.int32)),
                np.ascontiguousarray(bufs[2].reshape(-1).cpu().numpy().astype(np.int32)),
            )
            cache._key = key
            cache._lists = (cache.cdf.tolist(), cache.lengths.tolist(), cache.offsets.tolist())
            entropy_model._aecodec_tables = cache
        return cache

    @property
    def n(self) -> int:
        return int(self.cdf.shape[0])


def _ans():
    from ._deps import import_compressai

    import_compressai()
    from compressai import ans

    return ans


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: Tables) -> bytes:
    """rANS-encode int symbols with the CDF chosen by each index (flat arrays, same length)."""
    symbols = np.asarray(symbols).reshape(-1)
    indexes = np.asarray(indexes).reshape(-1)
    if symbols.shape != indexes.shape:
        raise ValueError("symbols and indexes differ in length")
    if symbols.size and int(np.abs(symbols.astype(np.int64)).max()) >= SYMBOL_LIMIT:
        raise ValueError(f"latent value out of the coder's range (|v| >= {SYMBOL_LIMIT})")
    if indexes.size and not (0 <= int(indexes.min()) and int(indexes.max()) < tables.n):
        raise ValueError("CDF index out of range")
    cdf, lengths, offsets = tables._lists
    enc = _ans().BufferedRansEncoder()
    for i in range(0, symbols.size, CHUNK):
        enc.encode_with_indexes(symbols[i:i + CHUNK].astype(np.int32).tolist(),
                                indexes[i:i + CHUNK].astype(np.int32).tolist(), cdf, lengths, offsets)
    return enc.flush()


def _worker_command():
    so = _ans().__file__
    return [sys.executable, "-I", "-S", "-B", str(_WORKER), so]


def decode(string: bytes, indexes: np.ndarray, tables: Tables, what: str = "payload") -> np.ndarray:
    """Decode ``len(indexes)`` symbols from ``string`` in a worker process and verify the string.

    Returns int32 symbols.  Raises FormatError if the worker crashes, hangs,
    fails, decodes an out-of-range value, or if the string is not exactly the
    encoding of the decoded symbols.
    """
    indexes = np.ascontiguousarray(np.asarray(indexes).reshape(-1), dtype=np.uint16)
    n = int(indexes.size)
    if n == 0:
        if string:
            raise FormatError(f"corrupt {what}: data where no symbols are coded")
        return np.zeros(0, np.int32)
    header = b"AECR" + np.array([1], "=u4").tobytes() + np.array([n], "=u8").tobytes() + \
        np.array([len(string), tables.n, tables.cdf.shape[1], CHUNK], "=u4").tobytes()
    request = b"".join([header, tables.cdf.astype("=i4").tobytes(), tables.lengths.astype("=i4").tobytes(),
                        tables.offsets.astype("=i4").tobytes(), bytes(string), indexes.astype("=u2").tobytes()])
    timeout = TIMEOUT_BASE_S + TIMEOUT_PER_SYMBOL_S * n
    proc = subprocess.Popen(_worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, close_fds=True)
    try:
        out, err = proc.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise FormatError(f"corrupt {what}: the entropy decoder did not finish within {timeout:.0f} s") from None
    except BaseException:  # KeyboardInterrupt and friends: never leave the worker behind
        proc.kill()
        proc.wait()
        raise
    finally:
        del request
    if proc.returncode < 0:
        raise FormatError(f"corrupt {what}: the entropy decoder crashed on it (signal {-proc.returncode})")
    if proc.returncode != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise FormatError(f"corrupt {what}: the entropy decoder failed ({msg[-1] if msg else proc.returncode})")
    if len(out) != 4 * n:
        raise FormatError(f"corrupt {what}: the entropy decoder returned {len(out)} bytes, expected {4 * n}")
    symbols = np.frombuffer(out, dtype="=i4")
    if int(np.abs(symbols.astype(np.int64)).max()) >= SYMBOL_LIMIT:
        raise FormatError(f"corrupt {what}: decoded values out of range")
    if encode(symbols, indexes, tables) != bytes(string):
        raise FormatError(f"corrupt {what}: the entropy-coded data is not a valid encoding "
                          "(damaged, truncated or not made by aecodec)")
    return symbols
