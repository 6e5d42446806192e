"""Writing real GGUF files for the tests: a tiny Llama the way llama.cpp's converter writes it.

`convert_hf_to_gguf.py` renames the Hugging Face tensors to GGUF's names, permutes the rows of the
query and key projections (llama.cpp's rotary embedding pairs adjacent dimensions, Hugging Face's
pairs the two halves of a head) and stores the tokenizer as `tokenizer.ggml.*` arrays; transformers'
GGUF loader undoes all three. Writing the same here makes a round trip through the loader exact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bigram_subnetworks.tokenizer import train_bpe

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A bigram subnetwork predicts the next token from the current one.",
    "Quantized weights are stored in blocks of thirty-two values with one scale.",
    "llama.cpp writes GGUF files; transformers reads them back into PyTorch.",
    "Pack my box with five dozen liquor jugs, said the dog to the fox.",
]

# ggml's token types (llama.cpp `llama_token_type`): a normal token, and a control token such as
# the end-of-text marker, which the loader adds as a special token.
_NORMAL, _CONTROL = 1, 3

# Hugging Face Llama parameter -> GGUF tensor name, per layer and for the whole model.
_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_MODEL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of a few hundred tokens (256 bytes, the end-of-text token, merges)."""
    return train_bpe(SENTENCES, vocab_size=320)


def tiny_llama(vocab_size: int, tied: bool = True, seed: int = 0) -> LlamaForCausalLM:
    """4 query heads over 2 key/value heads (grouped-query attention), a gated MLP; every matrix's
    input width is a multiple of 32, the block size of GGUF's quantization types."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so that a norm written as another tensor shows
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.uniform_(0.5, 1.5)
    return model


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py): the rows of each head from
    Hugging Face's half-split rotary order into llama.cpp's interleaved one."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensors(model: LlamaForCausalLM) -> dict[str, np.ndarray]:
    """The model's weights under their GGUF names, q and k permuted, in Hugging Face's (out, in)
    layout (GGUFWriter stores dimensions reversed, which is what ggml's (in, out) means)."""
    config = model.config
    tensors = {}
    for name, parameter in model.state_dict().items():
        array = parameter.detach().numpy().astype(np.float32)
        if name in _MODEL_TENSORS:
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            tensors[_MODEL_TENSORS[name]] = array
            continue
        _, _, layer, rest = name.split(".", 3)
        module, suffix = rest.rsplit(".", 1)
        if module == "self_attn.q_proj":
            array = permute(array, config.num_attention_heads)
        elif module == "self_attn.k_proj":
            array = permute(array, config.num_key_value_heads)
        tensors[f"blk.{layer}.{_LAYER_TENSORS[module]}.{suffix}"] = array
    return tensors


def write_llama_gguf(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    path: str | os.PathLike,
    quantization: gguf.GGMLQuantizationType | None = None,
    name: str | None = "tiny-llama",
    tokenizer_model: str = "gpt2",
) -> Path:
    """`model` and `tokenizer` as llama.cpp writes a Llama; with ``quantization`` every matrix is
    stored in that type's blocks (the norms stay F32, as in llama.cpp's quantized files).
    ``tokenizer_model`` is llama.cpp's name for the tokenizer kind ("gpt2": byte-level BPE)."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    if name is not None:
        writer.add_name(name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    file_type = gguf.LlamaFileType.ALL_F32
    if quantization is not None:
        file_type = gguf.LlamaFileType[f"MOSTLY_{quantization.name}"]
    writer.add_file_type(file_type)
    if quantization is not None:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, tokenizer_model)
    for tensor_name, array in gguf_tensors(model).items():
        if quantization is not None and array.ndim == 2:
            writer.add_tensor(
                tensor_name, gguf.quants.quantize(array, quantization), raw_dtype=quantization
            )
        else:
            writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _add_tokenizer(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerFast, tokenizer_model: str
) -> None:
    """The byte-level BPE as llama.cpp's `gpt2` tokenizer model: tokens in id order, their types,
    the merges in rank order and the special token ids."""
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    special = set(tokenizer.all_special_tokens)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_token_list(tokens)
    writer.add_token_types([_CONTROL if token in special else _NORMAL for token in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)


def write_header_only(
    path: str | os.PathLike,
    architecture: str,
    name: str | None = None,
    metadata: dict[str, int | float | list] | None = None,
) -> Path:
    """A valid GGUF of any `general.architecture`, with one small tensor and ``metadata``
    (integers as uint32, floats as float32, lists of integers or strings as arrays): what reading
    the header, and refusing an architecture, need."""
    writer = gguf.GGUFWriter(str(path), architecture)
    if name is not None:
        writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, value in (metadata or {}).items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
