"""Entropy-decoder worker: runs compressai's rANS decoder in a separate process.

compressai's C++ decoder trusts its input: on a string that is too short or
that was crafted, it reads past the end of its buffer (a segmentation fault,
or symbols made of whatever memory follows) and a crafted bypass sequence can
keep it looping.  aecodec therefore never runs it in its own process: this
script is started with ``python -I -S`` (standard library only; it loads the
compiled ``compressai.ans`` module straight from its file, without importing
torch), decodes one string and writes the symbols back.  A crash or a hang
costs only this process; the parent turns it into a FormatError.

Protocol (native byte order, the parent is the same machine):
  stdin:  b"AECR", then struct "=IQIIII" (version=1, n symbols, string length,
          number of CDFs, CDF row width, chunk size), the CDF table (int32,
          n_cdfs x width), CDF lengths (int32), offsets (int32), the string, the
          CDF index of each symbol (uint16).
  stdout: n int32 symbols.  Exit status 0 on success.
"""

import struct
import sys
from array import array

HEADER = struct.Struct("=IQIIII")
PAD = 65536  # zero bytes after the string: short over-reads see zeros, not heap


def _limit_resources(string_len: int, chunk: int) -> None:
    try:
        import resource
    except ImportError:  # not POSIX
        return
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dump if the decoder crashes
        cap = (1 << 30) + 4 * string_len + 64 * chunk
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        pass


def _load_ans(path: str):
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("compressai.ans", path)
    spec = importlib.util.spec_from_file_location("compressai.ans", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _read(f, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EOFError("short input")
    return b


def main() -> int:
    fin, fout = sys.stdin.buffer, sys.stdout.buffer
    if _read(fin, 4) != b"AECR":
        sys.stderr.write("bad request\n")
        return 2
    version, n, slen, n_cdfs, width, chunk = HEADER.unpack(_read(fin, HEADER.size))
    if version != 1 or not (1 <= n_cdfs <= 65535 and 2 <= width and 1 <= chunk):
        sys.stderr.write("bad request header\n")
        return 2
    _limit_resources(slen, chunk)
    ans = _load_ans(sys.argv[1])

    flat = array("i")
    flat.frombytes(_read(fin, 4 * n_cdfs * width))
    cdfs = [flat[i * width:(i + 1) * width].tolist() for i in range(n_cdfs)]
    lengths = array("i")
    lengths.frombytes(_read(fin, 4 * n_cdfs))
    offsets = array("i")
    offsets.frombytes(_read(fin, 4 * n_cdfs))
    lengths, offsets = lengths.tolist(), offsets.tolist()
    for row, ln in zip(cdfs, lengths):  # the C++ code asserts nothing in release builds
        if not (2 <= ln <= width and row[0] == 0 and row[ln - 1] == 65536):
            sys.stderr.write("bad CDF table\n")
            return 2
    string = _read(fin, slen)

    dec = ans.RansDecoder()
    dec.set_stream(string + bytes(PAD))
    del string
    left = n
    while left:
        k = min(chunk, left)
        idx = array("H")
        idx.frombytes(_read(fin, 2 * k))
        if max(idx) >= n_cdfs:
            sys.stderr.write("bad CDF index\n")
            return 2
        out = dec.decode_stream(idx.tolist(), cdfs, lengths, offsets)
        fout.write(array("i", out).tobytes())
        left -= k
    fout.flush()
    return 0


if __name__ == "__main__":
    try:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: die quietly, the parent reports it
    except (ImportError, ValueError, AttributeError):
        pass
    try:
        sys.exit(main())
    except (EOFError, MemoryError, OverflowError, ValueError) as e:
        sys.stderr.write(f"{type(e).__name__}: {e}\n")
        sys.exit(3)
