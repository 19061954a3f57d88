"""Entropy coding of an artifact's integer tensors (int8 weights, packed indices, masks, sparse
index arrays), one tensor at a time, each with whichever candidate is smallest:

- ``ans``: range-variant ANS (``constriction``) with an order-0 model of the tensor's own symbol
  counts, stored in the payload: within a fraction of a bit of the empirical entropy, below one
  bit per symbol when one value dominates (masks, pruned zeros), where Huffman cannot go;
- ``zstd``: Zstandard over the raw bytes: wins where runs repeat (structured zeros, index ramps);
- raw: the tensor as it is, when neither is smaller (small or high-entropy tensors).

What a symbol is: ``bytes`` (each byte of an 8-bit tensor), ``nibbles`` (the two 4-bit halves of
each byte of a packed uint8 tensor: 16 symbols, a smaller table), ``values`` (each element of a
wider integer tensor), ``delta`` (differences of consecutive elements, of uint8 ones mod 256: row
pointers, column indices sorted within rows).

A payload is a coded tensor's bytes; its entry (JSON) names coder, symbols, dtype and shape.
Decoding is for files from outside: :func:`check_entry` bounds the entry against its payload
and :func:`decode` never writes more than the declared shape (any corrupt payload raises
:class:`~slimkit.errors.ArtifactError`). ``constriction``'s model quantisation fixes the coded
bits, so artifacts also carry a digest of the decoded tensors: a coder that decodes differently
(another version) is refused, never loaded wrong.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch

from .errors import ArtifactError

CODERS = ("ans", "zstd")
SYMBOLS = {  # symbols -> dtypes they apply to
    "bytes": ("bool", "uint8", "int8"),
    "nibbles": ("uint8",),
    "values": ("int16", "int32", "int64"),
    "delta": ("uint8", "int16", "int32", "int64"),
}
DTYPES = {name: getattr(torch, name) for name in ("bool", "uint8", "int8", "int16", "int32", "int64")}
_MAX_TABLE = 2**16  # distinct symbols an ANS table may hold (wider tensors are left to zstd)
# zstd level 19 is up to 15% smaller than 9 on masks and packed indices, but 15x slower
# (0.5 MB/s here): used up to 256 KiB a tensor, level 9 (10 MB/s) above
_ZSTD_LEVELS = ((2**18, 19), (None, 9))
_ZSTD_WINDOW = 2**23
MAX_GROWTH = 512  # bytes one coded entry may declare per coded byte (pruned codebook indices: ~50x seen)
DECODE_CHUNK = 2**20  # symbols decoded at a time
_BIG = 2**40


# --- varints (LEB128): the symbol tables -------------------------------------------------------

def _put_varint(out: bytearray, v: int) -> None:
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return


def _get_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    v = shift = 0
    for i in range(10):  # 70 bits: more than any count or zigzagged int64
        if pos + i >= len(buf):
            raise ValueError("table runs past the end of the payload")
        b = buf[pos + i]
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos + i + 1
    raise ValueError("a table number is too long")


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


# --- symbol streams ----------------------------------------------------------------------------

def _symbols(flat: np.ndarray, symbols: str) -> np.ndarray:
    """The symbol stream of a tensor's flat (native dtype) array."""
    if symbols == "bytes":
        return flat.view(np.uint8)
    if symbols == "nibbles":
        return np.stack([flat & 0x0F, flat >> 4], axis=1).reshape(-1).astype(np.uint8)
    if flat.dtype == np.uint8:  # delta of 8-bit indices: differences mod 256
        return np.diff(flat, prepend=np.uint8(0))
    wide = flat.astype(np.int64)
    return np.diff(wide, prepend=np.int64(0)) if symbols == "delta" else wide  # int64 wraps alike both ways


def _unsymbols(stream: np.ndarray, symbols: str, dtype: str, numel: int) -> np.ndarray:
    if symbols == "bytes":
        return stream.astype(np.uint8).view(np.bool_ if dtype == "bool" else np.dtype(dtype))
    if symbols == "nibbles":
        pairs = stream.astype(np.uint8).reshape(numel, 2)
        return pairs[:, 0] | (pairs[:, 1] << 4)
    if dtype == "uint8":  # delta
        return np.cumsum(stream.astype(np.uint8), dtype=np.uint8)
    wide = stream.astype(np.int64)
    return (np.cumsum(wide) if symbols == "delta" else wide).astype(np.dtype(dtype))


def _stream_len(symbols: str, numel: int) -> int:
    return 2 * numel if symbols == "nibbles" else numel


# --- ANS -----------------------------------------------------------------------------------------

def _model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def _ans_encode(stream: np.ndarray) -> bytes | None:
    import constriction

    if stream.dtype == np.uint8:  # bytes, nibbles: count, no sort
        counts = np.bincount(stream, minlength=256)
        values = np.flatnonzero(counts)
        lut = np.zeros(256, dtype=np.int32)
        lut[values] = np.arange(len(values), dtype=np.int32)
        index, counts = lut[stream], counts[values]
    else:
        values, index, counts = np.unique(stream, return_inverse=True, return_counts=True)
    if len(values) > _MAX_TABLE:
        return None
    head = bytearray()
    _put_varint(head, len(values))
    prev = 0
    for i, v in enumerate(values.tolist()):  # sorted: first zigzagged, then gaps - 1
        _put_varint(head, _zigzag(v) if i == 0 else v - prev - 1)
        prev = v
    for c in counts.tolist():
        _put_varint(head, c)
    if len(values) == 1:  # one symbol: the table says it all
        return bytes(head)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(index.reshape(-1).astype(np.int32), _model(counts))
    return bytes(head) + coder.get_compressed().astype("<u4").tobytes()


def _ans_decode(payload: memoryview, n: int, dtype=np.int64) -> np.ndarray:
    """``n`` symbols as ``dtype`` (uint8 for 8-bit streams: a quarter of the memory of int64)."""
    import constriction

    k, pos = _get_varint(payload, 0)
    if not 1 <= k <= min(_MAX_TABLE, max(n, 1)):
        raise ValueError(f"table of {k} symbols for {n} symbols")
    values, prev = [], 0
    for i in range(k):
        z, pos = _get_varint(payload, pos)
        prev = _unzigzag(z) if i == 0 else prev + z + 1
        if not -(2**63) <= prev < 2**63:
            raise ValueError("a symbol is out of the int64 range")
        values.append(prev)
    counts = []
    for _ in range(k):
        c, pos = _get_varint(payload, pos)
        if not 1 <= c <= n:
            raise ValueError(f"a symbol count of {c} for {n} symbols")
        counts.append(c)
    if sum(counts) != n:
        raise ValueError(f"the counts add up to {sum(counts)}, not {n}")
    table = np.array(values, dtype=np.int64).astype(dtype)  # a forged out-of-range symbol wraps: the digest sees it
    if k == 1:
        if pos != len(payload):
            raise ValueError("bytes after a one-symbol table")
        return np.full(n, table[0], dtype=dtype)
    if (len(payload) - pos) % 4:
        raise ValueError("the coded words are not whole 32-bit words")
    words = np.frombuffer(payload[pos:], dtype="<u4").astype(np.uint32)
    coder, model = constriction.stream.stack.AnsCoder(words), _model(np.array(counts))
    out = np.empty(n, dtype=dtype)
    for start in range(0, n, DECODE_CHUNK):  # int32 indices a chunk at a time: memory stays ~ the output's
        m = min(DECODE_CHUNK, n - start)
        out[start:start + m] = table[coder.decode(model, m)]
    return out


# --- zstd ----------------------------------------------------------------------------------------

def _zstd_encode(raw: bytes) -> bytes:
    import zstandard

    level = next(lv for limit, lv in _ZSTD_LEVELS if limit is None or len(raw) <= limit)
    return zstandard.ZstdCompressor(level=level).compress(raw)


def _zstd_decode(payload: memoryview, nbytes: int) -> bytes:
    import zstandard

    # the window a frame may ask for is bounded too (ours need at most 4 MiB: level 9's windowLog 22)
    with zstandard.ZstdDecompressor(max_window_size=_ZSTD_WINDOW).stream_reader(io.BytesIO(payload)) as r:
        out = r.read(nbytes + 1)  # one byte more than declared proves a longer stream; never more
    if len(out) != nbytes:
        raise ValueError(f"decodes to {'more than ' if len(out) > nbytes else ''}{min(len(out), nbytes)} "
                         f"bytes, not {nbytes}")
    return out


# --- the public pair ---------------------------------------------------------------------------

def _dtype_name(t: torch.Tensor) -> str | None:
    name = str(t.dtype).removeprefix("torch.")
    return name if name in DTYPES else None


def encode(t: torch.Tensor) -> tuple[bytes, dict] | None:
    """(payload, entry) of the smallest coding of ``t``; None when the raw bytes are as small
    (or ``t`` is not an integer tensor)."""
    dtype = _dtype_name(t)
    if dtype is None or t.numel() == 0:
        return None
    flat = t.detach().cpu().contiguous().reshape(-1).numpy()
    raw = flat.tobytes()
    best = (raw, None)
    candidates = [("zstd", "bytes")] + [("ans", s) for s, dts in SYMBOLS.items() if dtype in dts]
    for coder, symbols in candidates:
        payload = _zstd_encode(raw) if coder == "zstd" else _ans_encode(_symbols(flat, symbols))
        if payload is not None and len(payload) < len(best[0]) and allowed(len(raw), len(payload)):
            best = (payload, {"coder": coder, "symbols": symbols, "dtype": dtype, "shape": list(t.shape)})
    return None if best[1] is None else best


def allowed(declared: int, payload: int) -> bool:
    """The loader's bound on one coded entry: at most :data:`MAX_GROWTH` bytes per coded byte (plus
    64 KiB). A save never writes what a load would refuse: a tensor coded smaller (a layer of zeros) is stored raw."""
    return declared <= MAX_GROWTH * payload + 2**16


def check_entry(where: str, entry, payload: torch.Tensor) -> tuple[torch.dtype, list[int]]:
    """(dtype, shape) an entry declares, if it is well formed and its payload a byte vector."""
    if not (isinstance(entry, dict) and set(entry) == {"coder", "symbols", "dtype", "shape"}):
        raise ArtifactError(f"{where} is not {{'coder', 'symbols', 'dtype', 'shape'}}")
    coder, symbols, dtype, shape = entry["coder"], entry["symbols"], entry["dtype"], entry["shape"]
    if coder not in CODERS:
        raise ArtifactError(f"{where} has unknown coder {coder!r}; known: {list(CODERS)}")
    if dtype not in DTYPES:
        raise ArtifactError(f"{where} has dtype {dtype!r}; coded tensors are one of {list(DTYPES)}")
    if not (symbols == "bytes" if coder == "zstd" else symbols in SYMBOLS and dtype in SYMBOLS[symbols]):
        raise ArtifactError(f"{where}: {coder} cannot code {dtype} as {symbols!r}")
    if not (isinstance(shape, list) and len(shape) <= 8 and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= _BIG for s in shape)):
        raise ArtifactError(f"{where} has shape {shape!r}; a list of at most 8 ints in [0, 2**40]")
    if math.prod(shape) * DTYPES[dtype].itemsize > _BIG:
        raise ArtifactError(f"{where} declares a tensor of {shape}; refused")
    if payload.dtype != torch.uint8 or payload.dim() != 1:
        raise ArtifactError(f"{where}: its stored payload is {payload.dtype} {list(payload.shape)}, not bytes")
    return DTYPES[dtype], shape


def decode(where: str, entry: dict, payload: torch.Tensor) -> torch.Tensor:
    """The tensor ``entry`` declares, decoded from ``payload`` (checked by :func:`check_entry`
    and its declared size bounded by the caller before this allocates it)."""
    dtype, shape = check_entry(where, entry, payload)
    numel, symbols = math.prod(shape), entry["symbols"]
    buf = memoryview(payload.numpy().tobytes())
    try:
        if entry["coder"] == "zstd":
            flat = np.frombuffer(bytearray(_zstd_decode(buf, numel * dtype.itemsize)), dtype=np.uint8)
            flat = _unsymbols(flat, "bytes", entry["dtype"], numel)
        else:
            narrow = np.uint8 if symbols in ("bytes", "nibbles") or entry["dtype"] == "uint8" else np.int64
            flat = _unsymbols(_ans_decode(buf, _stream_len(symbols, numel), narrow), symbols, entry["dtype"], numel)
    except Exception as e:  # zstd, constriction and the table reader raise their own error types
        raise ArtifactError(f"{where} does not decode: {e}") from e
    return torch.from_numpy(np.ascontiguousarray(flat)).reshape(shape)


# --- a whole state dict ------------------------------------------------------------------------

def encode_all(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """The tensors to store (coded ones as byte vectors) and the entries of the coded ones."""
    stored, coded = dict(tensors), {}
    for key, t in tensors.items():
        best = encode(t)
        if best is not None:
            payload, coded[key] = best
            stored[key] = torch.from_numpy(np.frombuffer(payload, dtype=np.uint8).copy())
    return stored, coded


def digest(tensors: dict[str, torch.Tensor], keys) -> str:
    """sha256 of the named tensors as decoded: names, dtypes, shapes, bytes."""
    import hashlib
    import json

    h = hashlib.sha256()
    for key in sorted(keys):
        t = tensors[key]
        h.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def declared(path, coded: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta tensors (no memory) of the shapes and dtypes the coded entries declare. Each entry may
    declare at most :data:`MAX_GROWTH` times its payload's bytes (plus a little for tiny tensors),
    so one coded entry cannot raise the bound of the whole file."""
    out = {}
    for key, entry in coded.items():
        if key not in tensors:
            raise ArtifactError(f"{path} is corrupt: coded tensor {key!r} is not stored")
        dtype, shape = check_entry(f"{path}: coded tensor {key!r}", entry, tensors[key])
        t = torch.empty(shape, dtype=dtype, device="meta")
        payload = tensors[key].numel() * tensors[key].element_size()
        if not allowed(t.numel() * t.element_size(), payload):
            raise ArtifactError(f"{path}: coded tensor {key!r} declares {t.numel() * t.element_size():,} bytes "
                                f"from {payload:,} coded bytes; refused")
        out[key] = t
    return out


def decode_all(path, coded: dict, tensors: dict[str, torch.Tensor], sha256: str) -> dict[str, torch.Tensor]:
    """``tensors`` with the coded ones decoded, checked against their recorded digest."""
    out = dict(tensors)
    for key, entry in coded.items():
        out[key] = decode(f"{path}: coded tensor {key!r}", entry, tensors[key])
    if digest(out, coded) != sha256:
        raise ArtifactError(f"{path}: its coded tensors decode to other values than were saved "
                            "(saved by a slimkit whose coders differ from this one's?)")
    return out
