"""The .aec container: a small, versioned, self-describing header around the
entropy-coded strings.  Pure Python (no torch); specified in docs/FORMAT.md.

Layout (all integers big-endian)::

    magic        4   8A 41 45 43  ("\\x8aAEC")
    version      1   format version (1)
    flags        1   reserved, must be 0
    model_len    1   length of the model identifier (1..64)
    model_id     n   ASCII model identifier, e.g. "msh-128x192-f7bc26c0adba"
    quality      1   quality level (1..255; the model defines the valid range)
    mode         1   colour mode: 1 = L, 2 = LA, 3 = RGB, 4 = RGBA
    width        4   original width in pixels (1..1048512)
    height       4   original height in pixels (1..1048512)
    y_h, y_w     2+2 latent y shape
    z_h, z_w     2+2 hyper-latent z shape
    n_chunks     1   number of chunks that follow
    chunks           n_chunks x (tag 4 ASCII, length 4, data)
    crc32        4   CRC-32 (zlib) of every byte before it

Chunks: ``YSTR`` (y string), ``ZSTR`` (z string), ``ALPH`` (zlib-compressed
alpha plane, width*height bytes, for LA and RGBA), ``YIDX`` (optional: scale
indexes of latents whose predicted scale lies at a table entry, the desync
guard), ``QFRC`` (optional: the hundredths of a quality between two levels),
``iCCP`` (optional, ancillary: zlib-compressed ICC profile).  A chunk
whose tag starts with a lower-case letter is ancillary: decoders that do not
know it skip it.  An unknown critical (upper-case) chunk is an error.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

MAGIC = b"\x8aAEC"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
MODE_CODES = {v: k for k, v in MODES.items()}

KNOWN_CHUNKS = {b"YSTR", b"ZSTR", b"ALPH", b"YIDX", b"QFRC"}
KNOWN_ANCILLARY = {b"iCCP"}
MAX_CHUNKS = 32
# The latent shapes are 16-bit fields: y_w = ceil(width/64)*4 <= 65535.
MAX_DIMENSION = (65535 // 4) * 64  # 1,048,512 pixels per side

_FIXED_MIN = 4 + 1 + 1 + 1 + 1 + 1 + 1 + 4 + 4 + 8 + 1 + 4


class AecodecError(Exception):
    """Base of every error aecodec raises about data, images, sizes, weights or its decoder
    (``except aecodec.AecodecError``); each is also a ValueError or RuntimeError as before.
    Wrong argument types are TypeError, bad argument values (a quality of 9) ValueError."""


class DecoderUnavailable(AecodecError, RuntimeError):
    """The entropy decoder's worker process cannot run in this interpreter (an embedded or
    frozen Python whose ``sys.executable`` is not a Python, no processes left): not the file's
    fault."""


class FormatError(AecodecError, ValueError):
    """The data is not a valid .aec file (or was made by a model this aecodec lacks)."""


@dataclass
class Header:
    model_id: str
    quality: int
    mode: str
    width: int
    height: int
    y_shape: Tuple[int, int]
    z_shape: Tuple[int, int]
    version: int = FORMAT_VERSION

    def to_dict(self) -> Dict:
        return {
            "format_version": self.version,
            "model": self.model_id,
            "quality": self.quality,
            "mode": self.mode,
            "width": self.width,
            "height": self.height,
            "y_shape": list(self.y_shape),
            "z_shape": list(self.z_shape),
        }


@dataclass
class Container:
    header: Header
    chunks: Dict[bytes, bytes] = field(default_factory=dict)
    ancillary: List[Tuple[bytes, bytes]] = field(default_factory=list)
    header_bytes: int = 0  # bytes other than the YSTR/ZSTR payloads (header, chunk headers, side chunks, CRC)

    @property
    def quality_parts(self) -> Tuple[int, int]:
        """(level, hundredths): the header's level and the QFRC chunk's fraction (0 without one)."""
        blob = self.chunks.get(b"QFRC")
        return self.header.quality, (blob[0] if blob else 0)

    @property
    def quality(self):
        """The coded quality: the level (int), or level + hundredths / 100 (float) with a QFRC chunk."""
        level, frac = self.quality_parts
        return join_quality(level, frac)

    def ancillary_chunk(self, tag: bytes):
        for t, blob in self.ancillary:
            if t == tag:
                return blob
        return None


def join_quality(level: int, frac: int):
    """level (int) for a whole level, else the float level + frac / 100 (2 decimals, as given)."""
    return level if not frac else round(level + frac / 100, 2)


def pack(header: Header, chunks: List[Tuple[bytes, bytes]]) -> bytes:
    model = header.model_id.encode("ascii")
    if not 1 <= len(model) <= 64:
        raise ValueError("model id must be 1..64 ASCII characters")
    if header.mode not in MODE_CODES:
        raise ValueError(f"unsupported colour mode {header.mode!r}")
    if not (1 <= header.width <= MAX_DIMENSION and 1 <= header.height <= MAX_DIMENSION):
        raise ValueError(f"width and height must be 1..{MAX_DIMENSION}")
    if len(chunks) > MAX_CHUNKS:
        raise ValueError("too many chunks")
    out = bytearray()
    out += MAGIC
    out += struct.pack(">BBB", header.version, 0, len(model))
    out += model
    out += struct.pack(">BBII", header.quality, MODE_CODES[header.mode], header.width, header.height)
    out += struct.pack(">HHHH", *header.y_shape, *header.z_shape)
    out += struct.pack(">B", len(chunks))
    for tag, data in chunks:
        if len(tag) != 4:
            raise ValueError("chunk tags are 4 bytes")
        out += tag + struct.pack(">I", len(data)) + data
    out += struct.pack(">I", zlib.crc32(out) & 0xFFFFFFFF)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"truncated file: ends inside the {what}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


def parse_header_prefix(data: bytes) -> Tuple[Header, _Reader]:
    """Parse magic, version and the fixed header fields (no CRC check)."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not an aecodec file (bad magic bytes)")
    r = _Reader(data)
    r.take(4, "magic")
    version, flags, mlen = struct.unpack(">BBB", r.take(3, "header"))
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"unsupported format version {version} (this aecodec reads version "
                          f"{', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade aecodec")
    if flags != 0:
        raise FormatError(f"unknown header flags 0x{flags:02x}")
    if not 1 <= mlen <= 64:
        raise FormatError("corrupt header: bad model identifier length")
    raw_model = r.take(mlen, "header")
    try:
        model_id = raw_model.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("corrupt header: model identifier is not ASCII") from None
    if not model_id.isprintable():
        raise FormatError("corrupt header: model identifier is not printable")
    quality, mode_code, width, height = struct.unpack(">BBII", r.take(10, "header"))
    if mode_code not in MODES:
        raise FormatError(f"corrupt header: unknown colour mode {mode_code}")
    if width < 1 or height < 1 or width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise FormatError(f"corrupt header: impossible size {width}x{height}")
    yh, yw, zh, zw = struct.unpack(">HHHH", r.take(8, "header"))
    header = Header(model_id=model_id, quality=quality, mode=MODES[mode_code], width=width,
                    height=height, y_shape=(yh, yw), z_shape=(zh, zw), version=version)
    return header, r


def unpack(data: bytes) -> Container:
    """Parse and verify a whole .aec file. Raises FormatError on any problem."""
    data = bytes(data)
    header, r = parse_header_prefix(data)
    if len(data) < _FIXED_MIN:
        raise FormatError("truncated file")
    body_end = len(data) - 4
    (n_chunks,) = struct.unpack(">B", r.take(1, "header"))
    if n_chunks > MAX_CHUNKS:
        raise FormatError(f"corrupt header: {n_chunks} chunks")
    chunks: Dict[bytes, bytes] = {}
    ancillary: List[Tuple[bytes, bytes]] = []
    for _ in range(n_chunks):
        if r.pos + 8 > body_end:
            raise FormatError("truncated file: ends inside a chunk header")
        tag = r.take(4, "chunk header")
        (length,) = struct.unpack(">I", r.take(4, "chunk header"))
        if r.pos + length > body_end:
            raise FormatError(f"truncated file: chunk {tag!r} needs {length} bytes")
        blob = r.take(length, "chunk")
        if tag in KNOWN_CHUNKS:
            if tag in chunks:
                raise FormatError(f"corrupt file: duplicate chunk {tag.decode('latin-1')}")
            chunks[tag] = blob
        elif tag[:1].islower():
            if tag in KNOWN_ANCILLARY and any(t == tag for t, _ in ancillary):
                raise FormatError(f"corrupt file: duplicate chunk {tag.decode('latin-1')}")
            ancillary.append((tag, blob))
        else:
            raise FormatError(f"unknown critical chunk {tag!r}")
    if r.pos != body_end:
        if r.pos > body_end:
            raise FormatError("truncated file: no room for the checksum")
        raise FormatError(f"corrupt file: {body_end - r.pos} unexpected bytes after the last chunk")
    (crc,) = struct.unpack(">I", data[body_end:])
    if zlib.crc32(data[:body_end]) & 0xFFFFFFFF != crc:
        raise FormatError("corrupt file: checksum (CRC-32) mismatch")
    for need in (b"YSTR", b"ZSTR"):
        if need not in chunks:
            raise FormatError(f"corrupt file: missing {need.decode()} chunk")
    if b"QFRC" in chunks:
        frac = chunks[b"QFRC"]
        if len(frac) != 1 or not 1 <= frac[0] <= 99:
            raise FormatError("corrupt QFRC chunk: not one byte of 1..99")
    if header.mode in ("LA", "RGBA") and b"ALPH" not in chunks:
        raise FormatError("corrupt file: missing alpha chunk")
    if header.mode not in ("LA", "RGBA") and b"ALPH" in chunks:
        raise FormatError("corrupt file: alpha chunk in a file without alpha")
    coded = len(chunks[b"YSTR"]) + len(chunks[b"ZSTR"])
    return Container(header=header, chunks=chunks, ancillary=ancillary, header_bytes=len(data) - coded)
