"""Reading and writing IDX files, the format of the MNIST distribution (raw or gzip-compressed).

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element type code, ``NN`` the number of
dimensions), ``NN`` big-endian uint32 sizes, then the elements in row-major order, big-endian. Every reader error is
a [`DataError`][equican.errors.DataError] whose message names the file and what was wrong with it.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import DataError, DTypeError, ShapeError

__all__ = ["read_idx", "read_idx_header", "write_idx", "IdxHeader", "IDX_DTYPES"]

IDX_DTYPES: dict[int, tuple[np.dtype, torch.dtype]] = {
    0x08: (np.dtype(">u1"), torch.uint8),
    0x09: (np.dtype(">i1"), torch.int8),
    0x0B: (np.dtype(">i2"), torch.int16),
    0x0C: (np.dtype(">i4"), torch.int32),
    0x0D: (np.dtype(">f4"), torch.float32),
    0x0E: (np.dtype(">f8"), torch.float64),
}
"""The IDX element types: type code ``TT`` -> (big-endian numpy dtype as stored, torch dtype returned)."""
_CODE_OF_TORCH = {torch_dtype: code for code, (_, torch_dtype) in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _codes() -> str:
    return ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)


@contextlib.contextmanager
def _open(path: Path, where: str) -> Iterator[BinaryIO]:
    """Open ``path`` for reading, transparently decompressing gzip (detected by content, not by extension)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, also when the gzip layer fails
    except FileNotFoundError:
        raise DataError(f"{where}: expected an IDX file at {path}, got no such file") from None
    except IsADirectoryError:
        raise DataError(f"{where}: expected an IDX file at {path}, got a directory") from None
    except OSError as exc:
        raise DataError(f"{where}: expected a readable IDX file at {path}, got {exc.strerror or exc}") from None
    with raw:
        if raw.peek(2)[:2] == _GZIP_MAGIC:
            # GzipFile does not close a fileobj it was given; the outer ``with raw`` does.
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        else:
            yield raw


def _read(stream: BinaryIO, n: int, path: Path, where: str) -> bytes:
    """Read up to ``n`` bytes; gzip corruption (bad CRC, cut-off stream) becomes a DataError naming the file."""
    try:
        return stream.read(n) if n >= 0 else stream.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{where}: expected a valid gzip stream in {path}, got a corrupt or truncated one "
                        f"({exc})") from None


_CHUNK = 1 << 24


def _read_upto(stream: BinaryIO, n: int, path: Path, where: str) -> bytes:
    """Read up to ``n`` bytes in chunks: a header declaring 2³²-1 items must give a short read (a DataError
    below), not a request for terabytes that fails with MemoryError before a byte is read."""
    chunks, got = [], 0
    while got < n:
        chunk = _read(stream, min(_CHUNK, n - got), path, where)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX header declares.

    Attributes:
        dtype: the torch dtype of the elements.
        shape: the declared sizes, ``shape[0]`` being the number of items.
    """

    dtype: torch.dtype
    shape: tuple[int, ...]


def _header(stream: BinaryIO, path: Path, where: str) -> tuple[int, list[int]]:
    """Parse and validate the magic number and the sizes; returns (type code, sizes)."""
    magic = _read(stream, 4, path, where)
    if len(magic) < 4:
        raise DataError(f"{where}: expected a 4-byte IDX magic number in {path}, got a truncated file of "
                        f"{len(magic)} byte(s)")
    if magic[:2] != b"\x00\x00":
        raise DataError(f"{where}: expected IDX magic bytes 00 00 at the start of {path}, got bad magic "
                        f"{magic[:2].hex(' ')} (not an IDX file?)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{where}: expected an IDX type code in {{{_codes()}}} in {path}, "
                        f"got unsupported dtype code 0x{code:02X}")
    if ndim == 0:
        raise DataError(f"{where}: expected at least 1 dimension in the header of {path}, got 0")
    header = _read(stream, 4 * ndim, path, where)
    if len(header) < 4 * ndim:
        raise DataError(f"{where}: expected {ndim} dimension sizes ({4 * ndim} bytes) in the header of {path}, "
                        f"got a truncated header of {len(header)} byte(s)")
    return code, [int(s) for s in np.frombuffer(header, dtype=">u4")]


def read_idx_header(path: str | os.PathLike[str]) -> IdxHeader:
    """Read and validate only the header of an IDX file (raw or gzip), without reading its data.

    Args:
        path: the file.

    Returns:
        The declared dtype and shape.

    Raises:
        DataError: the file is missing or unreadable, corrupt gzip, or has a bad or truncated header.
    """
    path = Path(path)
    with _open(path, "read_idx_header") as stream:
        code, sizes = _header(stream, path, "read_idx_header")
    return IdxHeader(dtype=IDX_DTYPES[code][1], shape=tuple(sizes))


def read_idx(path: str | os.PathLike[str], *, limit: int | None = None) -> torch.Tensor:
    """Read an IDX file (raw or gzip-compressed) into a tensor.

    Args:
        path: the file; gzip compression is recognized by its magic bytes, whatever the file is called.
        limit: read only the first ``limit`` items along dimension 0 (all of them when None). With a limit the rest
            of the file is not read, so a file cut off after the requested items is not noticed.

    Returns:
        A tensor of shape ``(N, *sizes[1:])`` (``N`` = ``sizes[0]``, or ``min(sizes[0], limit)``) in native byte
        order, with the dtype the file declares: uint8, int8, int16, int32, float32 or float64.

    Raises:
        DataError: the file is missing or unreadable, is corrupt gzip, has a bad magic number, an unsupported type
            code, no dimensions, or fewer or more bytes than its sizes declare.
        ShapeError: ``limit`` is not a non-negative int.
    """
    path = Path(path)
    where = "read_idx"
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ShapeError(f"{where}: expected limit to be a non-negative int or None, got {limit!r}")
    with _open(path, where) as stream:
        code, sizes = _header(stream, path, where)
        stored = IDX_DTYPES[code][0]
        count = sizes[0] if limit is None else min(sizes[0], limit)
        want = count * math.prod(sizes[1:]) * stored.itemsize
        data = _read_upto(stream, want, path, where)
        if len(data) < want:
            declared = "x".join(map(str, sizes))
            raise DataError(f"{where}: expected {want} data bytes in {path} (sizes {declared} of {stored.name}), "
                            f"got a truncated file with {len(data)}")
        if limit is None:
            # A file longer than its header declares is as suspect as a short one (e.g. a wrong count field).
            extra = len(_read(stream, 1 << 20, path, where))
            if extra:
                raise DataError(f"{where}: expected {want} data bytes in {path} as its header declares, got a size "
                                f"mismatch: {'at least ' if extra == 1 << 20 else ''}{extra} trailing byte(s)")
    array = np.frombuffer(data, dtype=stored).astype(stored.newbyteorder("="), copy=True)
    return torch.from_numpy(array.reshape(count, *sizes[1:]))


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor, *, compress: bool | None = None) -> Path:
    """Write a tensor as an IDX file, gzip-compressed when ``compress`` (default: when ``path`` ends in ``.gz``).

    The gzip header carries no timestamp or file name, so equal tensors give byte-identical files.

    Args:
        path: the file to write (its parent directory must exist).
        tensor: shape ``(N, ...)`` with 1 to 255 dimensions, of dtype uint8, int8, int16, int32, float32 or float64.
        compress: gzip or raw; None decides by the ``.gz`` suffix.

    Returns:
        The path written.

    Raises:
        DTypeError: the tensor's dtype has no IDX type code.
        ShapeError: the tensor has no dimensions or more than 255.
    """
    path = Path(path)
    where = "write_idx"
    if not isinstance(tensor, torch.Tensor):
        raise DTypeError(f"{where}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _CODE_OF_TORCH:
        names = ", ".join(str(d) for d in _CODE_OF_TORCH)
        raise DTypeError(f"{where}: expected a tensor of dtype {names}, got {tensor.dtype}")
    if not 1 <= tensor.ndim <= 255:
        raise ShapeError(f"{where}: expected a tensor with 1 to 255 dimensions, got {tensor.ndim}")
    code = _CODE_OF_TORCH[tensor.dtype]
    stored = IDX_DTYPES[code][0]
    payload = (bytes([0, 0, code, tensor.ndim]) + np.asarray(tensor.shape, dtype=">u4").tobytes()
               + tensor.detach().cpu().contiguous().numpy().astype(stored).tobytes())
    if compress is None:
        compress = path.suffix == ".gz"
    with open(path, "wb") as out:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
                gz.write(payload)
        else:
            out.write(payload)
    return path
