"""Writing tiny real package files for the tests, in the layouts the registries serve: npm
tarballs (`package/...` in a gzipped tar), Debian packages (an `ar` archive of debian-binary,
control.tar.gz and data.tar.xz, as `dpkg-deb --build -Zxz` writes), a SWORD zText module and an R
lazy-load database, so that `bigram_subnetworks.english` reads them as it reads the real ones.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

Content = str | bytes


def _bytes(content: Content) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _tar(files: Mapping[str, Content], mode: str, links: Mapping[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, content in files.items():
            data = _bytes(content)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def npm_tarball(path: Path, files: Mapping[str, Content]) -> Path:
    """An `npm pack` tarball: every file under `package/`."""
    path.write_bytes(_tar({f"package/{name}": content for name, content in files.items()}, "w:gz"))
    return path


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def deb(path: Path, files: Mapping[str, Content], links: Mapping[str, str] | None = None) -> Path:
    """A Debian package whose data.tar.xz holds ``files`` (paths without the leading ./, which
    the archive adds as dpkg-deb does) and symbolic ``links``."""
    control = _tar({"./control": "Package: tiny\nVersion: 1.0\nArchitecture: all\n"}, "w:gz")
    data = _tar(
        {f"./{name}": content for name, content in files.items()},
        "w:xz",
        {f"./{name}": target for name, target in (links or {}).items()},
    )
    path.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.gz", control)
        + _ar_member("data.tar.xz", data)
    )
    return path


def ztext(books: Sequence[Sequence[str]]) -> dict[str, bytes]:
    """One testament of a SWORD zText module (`.bzs`, `.bzv`, `.bzz`) holding ``books`` of
    OSIS verses: one zlib block per book after the importer's mark in block 0, the first two
    verse records pointing at that block (as osis2mod writes)."""
    mark = b'<milestone type="x-importer" subType="x-osis2mod" n="$Rev: 3769 $"/>'
    blocks = [mark, *(b"".join(v.encode() for v in verses) for verses in books)]
    index, compressed, verses_index = b"", b"", struct.pack("<IIH", 0, 0, 0)
    verses_index += struct.pack("<IIH", 0, 0, len(mark))
    for number, block in enumerate(blocks):
        packed = zlib.compress(block)
        index += struct.pack("<III", len(compressed), len(packed), len(block))
        compressed += packed
        if number:
            offset = 0
            for verse in books[number - 1]:
                size = len(verse.encode())
                verses_index += struct.pack("<IIH", number, offset, size)
                offset += size
            verses_index += struct.pack("<IIH", number, offset, 0)  # an empty verse slot
    return {"bzs": index, "bzv": verses_index, "bzz": compressed}


def _r_serialized_strings(strings: Sequence[str | None]) -> bytes:
    """`serialize(strings, NULL, xdr = TRUE, version = 3)` of a character vector (None: NA)."""
    raw = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500)
    raw += struct.pack(">i", 5) + b"UTF-8" + struct.pack(">ii", 16, len(strings))
    for string in strings:
        if string is None:
            raw += struct.pack(">ii", 9, -1)
        else:
            data = string.encode("utf-8")
            raw += struct.pack(">ii", 0x8009, len(data)) + data  # CHARSXP marked UTF-8
    return raw


def r_lazyload(vectors: Sequence[Sequence[str | None]], with_number: bool = True) -> bytes:
    """An R lazy-load database (`data/Rdata.rdb`): each object a 4-byte big-endian length and a
    zlib stream; a numeric vector among the character vectors when ``with_number``."""
    raws = [_r_serialized_strings(v) for v in vectors]
    if with_number:
        number = b"X\n" + struct.pack(">iiii", 2, 0x040201, 0x020300, 14) + struct.pack(">i", 1)
        raws.insert(1, number + struct.pack(">d", 1.0))
    return b"".join(struct.pack(">I", len(raw)) + zlib.compress(raw) for raw in raws)


def dictzip(text: str) -> bytes:
    """A dictd database (`.dict.dz`): gzip-compatible."""
    return gzip.compress(text.encode("utf-8"))
