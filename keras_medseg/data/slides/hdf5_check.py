"""Fail fast on truncated or foreign HDF5 files, before h5py opens them.

HDF5 opened in SWMR read mode (`h5py.File(path, "r", swmr=True)`, which the
patch store uses so readers can follow a live writer) retries a metadata read
that fails its checksum, because under SWMR the writer may be half-way through
updating it. On a file that was truncated (a copy cut short, a full disk) the
read never succeeds and the retries take many minutes. The file's superblock,
however, records the address of the end of the file, so a truncated file can
be recognised by comparing that address with the size on disk, in
microseconds. `check_hdf5_file(path)` does that (and checks the signature),
raising a one-line `ValueError` that names the file.

The superblock layout follows the "HDF5 File Format Specification" (The HDF
Group), section II.A: versions 0 and 1 store the end-of-file address after the
base and free-space addresses, versions 2 and 3 after the base and
superblock-extension addresses; every address is `size_of_offsets` bytes,
little-endian. The signature may sit at byte 0, 512, 1024, 2048, ...
"""

import os

__all__ = ["check_hdf5_file"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_UNDEFINED = object()


def _find_superblock(f, size):
    offset = 0
    while offset + 8 <= size:
        f.seek(offset)
        if f.read(8) == _SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _read_addr(f, n):
    raw = f.read(n)
    if len(raw) != n:
        return _UNDEFINED
    value = int.from_bytes(raw, "little")
    return None if value == (1 << (8 * n)) - 1 else value


def check_hdf5_file(path, what="HDF5 file"):
    """Raise a one-line `ValueError` when `path` is not HDF5 or is shorter than its superblock says.

    Args:
        path: str or path-like, an existing file.
        what: str, how the message names the file (e.g. "Patch store").

    Returns:
        the end-of-file address recorded in the superblock (bytes).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: no HDF5 signature, an unreadable superblock, or a file
            truncated below its recorded end (the message gives both sizes).

    Example:

    >>> check_hdf5_file("patches.h5", "Patch store")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist.")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        base = _find_superblock(f, size)
        if base is None:
            raise ValueError(f"{what} {path!r} is corrupt or truncated: not an HDF5 file (no HDF5 signature; "
                             f"{size} bytes).")
        f.seek(base + 8)
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{what} {path!r} is corrupt or truncated inside its HDF5 superblock ({size} bytes).")
        version = head[0]
        if version in (0, 1):
            n_off = head[5]
            f.seek(base + 8 + 16 + (4 if version == 1 else 0))
            addrs = [_read_addr(f, n_off) for _ in range(3)]  # base, free-space, end of file
        elif version in (2, 3):
            n_off = head[1]
            f.seek(base + 12)
            addrs = [_read_addr(f, n_off) for _ in range(3)]  # base, extension, end of file
        else:
            raise ValueError(f"{what} {path!r} has an HDF5 superblock of unknown version {version}.")
        if n_off not in (2, 4, 8, 16) or any(a is _UNDEFINED for a in addrs):
            raise ValueError(f"{what} {path!r} is truncated or corrupt inside its HDF5 superblock ({size} bytes).")
        base_addr, _, eof = addrs
        end = (base_addr or 0) + (eof or 0) if base_addr is not None else base + (eof or 0)
        if eof is not None and size < end:
            raise ValueError(
                f"{what} {path!r} is corrupt or truncated: {size} bytes on disk, its HDF5 header records {end}. "
                "Restore it from a copy, or extract the patches again."
            )
        return end
