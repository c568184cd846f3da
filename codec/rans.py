"""compressai's rANS coder, used safely.

* Encoding runs in process (our own symbols, checked to be in range first).
* Decoding runs in a separate worker process (``_rans_worker.py``) with a time
  limit, because compressai's C++ decoder does no bounds checking: a short or
  crafted string makes it read past its buffer (seen: segmentation faults) or
  loop for a long time.  A crash, a hang or an error of the worker becomes a
  :class:`~aecodec.format.FormatError`, unless the worker cannot run at all here
  (``DecoderUnavailable``: it fails on a known-good string too, or cannot start).
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
from typing import List

import numpy as np

from .format import DecoderUnavailable, FormatError

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


def _interpreter() -> str:
    """The Python that runs the worker: this one (or, in a virtual environment whose
    executable is gone, its base; the worker needs only the standard library)."""
    if getattr(sys, "frozen", False):
        raise DecoderUnavailable("cannot decode in a frozen application: aecodec's entropy decoder runs in a "
                                 "Python worker process (see aecodec.rans)")
    for exe in (sys.executable, getattr(sys, "_base_executable", None)):
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    raise DecoderUnavailable(f"cannot decode here: aecodec's entropy decoder runs in a Python worker process, "
                             f"and sys.executable ({sys.executable!r}) is not a Python it can start")


def _worker_command():
    so = _ans().__file__
    return [_interpreter(), "-I", "-S", "-B", str(_WORKER), so]


_worker_works: List[bool] = []  # [True] once the worker answered a decode in this process


def _check_worker(problem: str) -> None:
    """Before calling a string corrupt because the worker failed on it: does the worker decode
    a string known to be good?  DecoderUnavailable if not (once per process at most)."""
    if _worker_works:
        return
    tables = Tables(np.array([[0, 16384, 49152, 65536]], np.int32), np.array([4], np.int32), np.array([0], np.int32))
    tables._lists = (tables.cdf.tolist(), tables.lengths.tolist(), tables.offsets.tolist())
    symbols = np.array([0, 1, 1, 0, 1], np.int32)
    try:
        good = _decode(encode(symbols, np.zeros(5, np.uint16), tables), np.zeros(5, np.uint16), tables, "probe", 20.0)
        ok = np.array_equal(good, symbols)
    except (FormatError, OSError):
        ok = False
    if not ok:
        raise DecoderUnavailable(f"aecodec's entropy decoder does not work here: its worker process "
                                 f"({' '.join(_worker_command()[:1])} -I -S ...) fails on a known-good string too "
                                 f"(on this file: {problem})")
    _worker_works.append(True)


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
    try:
        symbols = _decode(string, indexes, tables, what)
    except FormatError as e:
        _check_worker(str(e))  # the worker's own failure is not the file's
        raise
    if not _worker_works:
        _worker_works.append(True)  # it ran and answered: later failures are the data's
    if encode(symbols, indexes, tables) != bytes(string):
        raise FormatError(f"corrupt {what}: the entropy-coded data is not a valid encoding "
                          "(damaged, truncated or not made by aecodec)")
    return symbols


def _decode(string: bytes, indexes: np.ndarray, tables: Tables, what: str, timeout=None) -> np.ndarray:
    """The worker's symbols for ``string`` (not yet checked by re-encoding); FormatError when it
    crashes, hangs, fails or answers out of range; DecoderUnavailable when it cannot start."""
    n = int(indexes.size)
    header = b"AECR" + np.array([1], "=u4").tobytes() + np.array([n], "=u8").tobytes() + \
        np.array([len(string), tables.n, tables.cdf.shape[1], CHUNK], "=u4").tobytes()
    request = b"".join([header, tables.cdf.astype("=i4").tobytes(), tables.lengths.astype("=i4").tobytes(),
                        tables.offsets.astype("=i4").tobytes(), bytes(string), indexes.astype("=u2").tobytes()])
    timeout = timeout or TIMEOUT_BASE_S + TIMEOUT_PER_SYMBOL_S * n
    command = _worker_command()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True)
    except OSError as e:
        raise DecoderUnavailable(f"aecodec's entropy decoder cannot start its worker process ({command[0]}): "
                                 f"{e.strerror or e}") from None
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
    return symbols
