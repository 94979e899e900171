"""Random-weight Voxtral Mini 4B Realtime checkpoints in the real file formats.

The real weights (8.9 GB) cannot be downloaded in CI, so correctness is proven
on checkpoints generated here and compared with the reference implementation
(transformers' ``VoxtralRealtimeForConditionalGeneration``) loaded from the
Hugging Face layout of the SAME random tensors.

Layouts
- ``native``: ``consolidated.safetensors`` (BF16, Mistral tensor names),
  ``params.json``, ``tekken.json``.
- ``hf``: ``config.json``, ``model-0000i-of-0000N.safetensors`` +
  ``model.safetensors.index.json`` (HF names, q/k rows permuted per head for
  rotate-half RoPE, ``lm_head`` tied and not saved), ``tekken.json``,
  ``preprocessor_config.json``.

Weights (the distribution that gives varied greedy tokens): matrices
N(0, (2/sqrt(fan_in))^2), the token embedding N(0, embedding_std^2), norm
weights 1 + N(0, 0.1^2), biases N(0, 0.1^2); rounded to BF16 (nearest, ties
to even). ``embedding_std`` is 1 in ``tiny`` and 0.25 at full width: with tied
embeddings the previous token's own logit gets a bonus that grows like
``embedding_std * sqrt(dim)`` against the best competitor, and at dim 3072
N(0, 1) made the reference repeat tokens (23 distinct of 73 on a 5 s clip at
960 ms delay; 0.25 gives 31 of 73, and 69 of 148 on jfk.wav at 480 ms).
A power of two, so it commutes exactly with the BF16 rounding.
``outliers=True`` gives the matrices what real checkpoints have and
quantizers find hard: heavy tails (Student-t, 4 degrees of freedom, scaled to
the same std) and a few large input channels (1 % of the columns x 8), to
measure quantization error on something closer than Gaussian weights.
Every tensor has its own random stream derived from ``(seed, tensor name)``,
so a tensor's values do not depend on the other tensors or the layer count
(layer 0 of ``fullwidth`` equals layer 0 of ``full`` for the same seed).

Generation streams tensor by tensor to disk (the ``full`` preset, 4.4 B
parameters, never holds more than one tensor in memory).

Command line::

    python -m voxtral.testing.checkpoint OUT_DIR --preset tiny|fullwidth|full \
        [--layout native|hf|both] [--seed N] [--enc-layers N --dec-layers N]

``--layout both`` writes ``OUT_DIR/native`` and ``OUT_DIR/hf``; a single
layout is written to ``OUT_DIR`` itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxtral.testing.safetensors_writer import SafetensorsWriter, TensorSpec

__all__ = [
    "PRESETS",
    "NUM_SPECIAL_TOKENS",
    "NAMED_SPECIAL_TOKENS",
    "AUDIO_SECTION",
    "make_checkpoint",
    "resolve_dims",
    "tensor_specs",
    "native_to_hf_name",
    "permute_for_rotate_half",
    "unpermute_from_rotate_half",
    "params_json",
    "hf_config_json",
    "build_tekken",
    "main",
]

NUM_SPECIAL_TOKENS = 1000

# Control tokens at their ranks; every other rank < 1000 is "<SPECIAL_{rank}>".
# mistral-common's MistralTokenizer (v7) needs the instruct/tool tokens; the
# Voxtral ones are [AUDIO] 24, [BEGIN_AUDIO] 25, [STREAMING_PAD] 32.
NAMED_SPECIAL_TOKENS: dict[int, str] = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]",
    8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]",
    10: "[IMG]",
    11: "<pad>",
    12: "[IMG_BREAK]",
    13: "[IMG_END]",
    14: "[PREFIX]",
    15: "[MIDDLE]",
    16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]",
    18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
    20: "[ARGS]",
    21: "[CALL_ID]",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    26: "[TRANSCRIBE]",
    32: "[STREAMING_PAD]",
    33: "[STREAMING_WORD]",
}

# Real values of the audio front end and streaming schedule.
AUDIO_SECTION: dict[str, Any] = {
    "sampling_rate": 16000,
    "frame_rate": 12.5,
    "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
    "transcription_format": "streaming",
    "transcription_delay_ms": 480,
    "streaming_look_ahead_ms": 2.5,
    "streaming_look_back_ms": 52.5,
    "streaming_n_left_pad_tokens": 32,
}

_COMMON: dict[str, Any] = {
    # decoder
    "rope_theta": 1e6,
    "norm_eps": 1e-5,
    "sliding_window": 8192,
    "ada_rms_norm_t_cond_dim": 32,
    # encoder
    "enc_rope_theta": 1e6,
    "enc_norm_eps": 1e-5,
    "enc_sliding_window": 750,
    "num_mel_bins": 128,
    "downsample_factor": 4,
    # audio
    "sampling_rate": 16000,
    "frame_rate": 12.5,
    "hop_length": 160,
    "window_size": 400,
    "global_log_mel_max": 1.5,
    "transcription_delay_ms": 480,
    # weights
    "outliers": False,
    # The [STREAMING_PAD] row of the tied embedding / LM head times this gain:
    # > 1 makes greedy decoding emit pads at a speech-like rate (a trained
    # model's ~70%), which random weights otherwise rarely do.
    "pad_gain": 1.0,
}

_REAL: dict[str, Any] = {
    **_COMMON,
    "dim": 3072,
    "n_layers": 26,
    "head_dim": 128,
    "hidden_dim": 9216,
    "n_heads": 32,
    "n_kv_heads": 8,
    "vocab_size": 131072,
    "enc_dim": 1280,
    "enc_n_layers": 32,
    "enc_head_dim": 64,
    "enc_hidden_dim": 5120,
    "enc_n_heads": 32,
    "max_shard_bytes": 5 * 10**9,
    # Token embedding std at full width (see the module docstring): with tied
    # embeddings the previous token's own logit gets a bonus ~ std * sqrt(dim)
    # relative to the best competitor, so N(0, 1) at dim 3072 repeats tokens.
    "embedding_std": 0.25,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Small but structurally faithful: n_heads*head_dim != dim in both stacks
    # (decoder 4x32=128 vs 96, encoder 4x32=128 vs 64), GQA 4:2, real audio
    # front end, real windows; vocab = 1000 specials + 7192 base tokens.
    "tiny": {
        **_COMMON,
        "dim": 96,
        "n_layers": 2,
        "head_dim": 32,
        "hidden_dim": 256,
        "n_heads": 4,
        "n_kv_heads": 2,
        "vocab_size": 8192,
        "enc_dim": 64,
        "enc_n_layers": 2,
        "enc_head_dim": 32,
        "enc_hidden_dim": 192,
        "enc_n_heads": 4,
        "max_shard_bytes": 1 << 20,
        "embedding_std": 1.0,
    },
    # Real widths and vocabulary, 2 encoder + 2 decoder layers (~0.73 B params).
    "fullwidth": {**_REAL, "n_layers": 2, "enc_n_layers": 2, "max_shard_bytes": 1 << 30},
    # The real sizes: 32 encoder + 26 decoder layers, 4.4 B params, 8.9 GB BF16.
    "full": dict(_REAL),
}

_ALIASES = {"dec_layers": "n_layers", "enc_layers": "enc_n_layers", "dec_n_layers": "n_layers"}

_CHUNK = 1 << 22  # elements per random draw (fixed: part of the determinism contract)


def resolve_dims(preset: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """The preset's dimensions with ``overrides`` applied and validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    d = dict(PRESETS[preset])
    for k, v in overrides.items():
        if v is None:
            continue
        k = _ALIASES.get(k, k)
        if k not in d:
            raise ValueError(f"unknown checkpoint option {k!r}")
        d[k] = v
    d["embedding_std"] = float(d["embedding_std"])
    d["outliers"] = bool(d["outliers"])
    d["pad_gain"] = float(d["pad_gain"])
    if not d["pad_gain"] > 0:
        raise ValueError("pad_gain must be > 0")
    if not d["embedding_std"] > 0:
        raise ValueError("embedding_std must be > 0")
    for k in (
        "dim",
        "n_layers",
        "head_dim",
        "hidden_dim",
        "n_heads",
        "n_kv_heads",
        "vocab_size",
        "enc_dim",
        "enc_n_layers",
        "enc_head_dim",
        "enc_hidden_dim",
        "enc_n_heads",
        "num_mel_bins",
        "downsample_factor",
        "ada_rms_norm_t_cond_dim",
        "sliding_window",
        "enc_sliding_window",
        "max_shard_bytes",
    ):
        d[k] = int(d[k])
        if d[k] < 1:
            raise ValueError(f"{k} must be >= 1, got {d[k]}")
    if d["head_dim"] % 2 or d["enc_head_dim"] % 2:
        raise ValueError("head dims must be even (RoPE pairs)")
    if d["n_heads"] % d["n_kv_heads"]:
        raise ValueError("n_heads must be a multiple of n_kv_heads")
    if d["vocab_size"] <= NUM_SPECIAL_TOKENS:
        raise ValueError(f"vocab_size must exceed the {NUM_SPECIAL_TOKENS} special tokens")
    return d


# ----------------------------------------------------------------------------
# Tensor layout
# ----------------------------------------------------------------------------

EMB = "mm_streams_embeddings.embedding_module."
ENC = EMB + "whisper_encoder."


@dataclass(frozen=True)
class WeightSpec:
    """One native tensor: its name, shape and how to draw it."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "matrix" | "embedding" | "norm" | "bias"
    # q/k rows to permute for the HF layout: (n_heads, head_dim) or None
    rope_heads: tuple[int, int] | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def tensor_specs(dims: dict[str, Any]) -> list[WeightSpec]:
    """All native tensors in file order."""
    d = dims
    D, E = d["dim"], d["enc_dim"]
    out: list[WeightSpec] = [
        WeightSpec(EMB + "tok_embeddings.weight", (d["vocab_size"], D), "embedding"),
        WeightSpec(ENC + "conv_layers.0.conv.weight", (E, d["num_mel_bins"], 3), "matrix"),
        WeightSpec(ENC + "conv_layers.0.conv.bias", (E,), "bias"),
        WeightSpec(ENC + "conv_layers.1.conv.weight", (E, E, 3), "matrix"),
        WeightSpec(ENC + "conv_layers.1.conv.bias", (E,), "bias"),
    ]
    eh, ehd, ef = d["enc_n_heads"], d["enc_head_dim"], d["enc_hidden_dim"]
    for i in range(d["enc_n_layers"]):
        p = f"{ENC}transformer.layers.{i}."
        out += [
            WeightSpec(p + "attention.wq.weight", (eh * ehd, E), "matrix", (eh, ehd)),
            WeightSpec(p + "attention.wq.bias", (eh * ehd,), "bias", (eh, ehd)),
            WeightSpec(p + "attention.wk.weight", (eh * ehd, E), "matrix", (eh, ehd)),
            WeightSpec(p + "attention.wv.weight", (eh * ehd, E), "matrix"),
            WeightSpec(p + "attention.wv.bias", (eh * ehd,), "bias"),
            WeightSpec(p + "attention.wo.weight", (E, eh * ehd), "matrix"),
            WeightSpec(p + "attention.wo.bias", (E,), "bias"),
            WeightSpec(p + "attention_norm.weight", (E,), "norm"),
            WeightSpec(p + "ffn_norm.weight", (E,), "norm"),
            WeightSpec(p + "feed_forward.w1.weight", (ef, E), "matrix"),
            WeightSpec(p + "feed_forward.w2.weight", (E, ef), "matrix"),
            WeightSpec(p + "feed_forward.w2.bias", (E,), "bias"),
            WeightSpec(p + "feed_forward.w3.weight", (ef, E), "matrix"),
        ]
    out += [
        WeightSpec(ENC + "transformer.norm.weight", (E,), "norm"),
        WeightSpec(EMB + "audio_language_projection.0.weight", (D, E * d["downsample_factor"]), "matrix"),
        WeightSpec(EMB + "audio_language_projection.2.weight", (D, D), "matrix"),
    ]
    h, kv, hd, f, tc = d["n_heads"], d["n_kv_heads"], d["head_dim"], d["hidden_dim"], d["ada_rms_norm_t_cond_dim"]
    for i in range(d["n_layers"]):
        p = f"layers.{i}."
        out += [
            WeightSpec(p + "attention_norm.weight", (D,), "norm"),
            WeightSpec(p + "attention.wq.weight", (h * hd, D), "matrix", (h, hd)),
            WeightSpec(p + "attention.wk.weight", (kv * hd, D), "matrix", (kv, hd)),
            WeightSpec(p + "attention.wv.weight", (kv * hd, D), "matrix"),
            WeightSpec(p + "attention.wo.weight", (D, h * hd), "matrix"),
            WeightSpec(p + "ffn_norm.weight", (D,), "norm"),
            WeightSpec(p + "feed_forward.w1.weight", (f, D), "matrix"),
            WeightSpec(p + "feed_forward.w2.weight", (D, f), "matrix"),
            WeightSpec(p + "feed_forward.w3.weight", (f, D), "matrix"),
            WeightSpec(p + "ada_rms_norm_t_cond.0.weight", (tc, D), "matrix"),
            WeightSpec(p + "ada_rms_norm_t_cond.2.weight", (D, tc), "matrix"),
        ]
    out.append(WeightSpec("norm.weight", (D,), "norm"))
    return out


_ENC_LAYER_MAP = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "attention_norm": "self_attn_layer_norm",
    "ffn_norm": "final_layer_norm",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
}
_DEC_LAYER_MAP = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "ada_rms_norm_t_cond.0": "ada_rms_norm.linear1",
    "ada_rms_norm_t_cond.2": "ada_rms_norm.linear2",
}
_FIXED_MAP = {
    EMB + "tok_embeddings.weight": "model.language_model.embed_tokens.weight",
    ENC + "conv_layers.0.conv.weight": "model.audio_tower.embedder.conv1.weight",
    ENC + "conv_layers.0.conv.bias": "model.audio_tower.embedder.conv1.bias",
    ENC + "conv_layers.1.conv.weight": "model.audio_tower.embedder.conv2.weight",
    ENC + "conv_layers.1.conv.bias": "model.audio_tower.embedder.conv2.bias",
    ENC + "transformer.norm.weight": "model.audio_tower.norm.weight",
    EMB + "audio_language_projection.0.weight": "model.multi_modal_projector.linear_1.weight",
    EMB + "audio_language_projection.2.weight": "model.multi_modal_projector.linear_2.weight",
    "norm.weight": "model.language_model.norm.weight",
}


def native_to_hf_name(name: str) -> str:
    """The Hugging Face name of a native Mistral tensor name."""
    if name in _FIXED_MAP:
        return _FIXED_MAP[name]
    for prefix, hf_prefix, table in (
        (ENC + "transformer.layers.", "model.audio_tower.layers.", _ENC_LAYER_MAP),
        ("layers.", "model.language_model.layers.", _DEC_LAYER_MAP),
    ):
        if name.startswith(prefix):
            idx, rest = name[len(prefix) :].split(".", 1)
            module, _, leaf = rest.rpartition(".")
            if module in table and idx.isdigit():
                return f"{hf_prefix}{idx}.{table[module]}.{leaf}"
    raise KeyError(f"no Hugging Face name for tensor {name!r}")


def permute_for_rotate_half(t: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    """Native (interleaved RoPE pairs) q/k rows -> HF rotate-half order, per head:
    ``t.reshape(H, hd//2, 2, *rest).transpose(1, 2).reshape(t.shape)``."""
    rest = t.shape[1:]
    return np.ascontiguousarray(t.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(t.shape))


def unpermute_from_rotate_half(t: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    """Inverse of :func:`permute_for_rotate_half`."""
    rest = t.shape[1:]
    return np.ascontiguousarray(t.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(t.shape))


# ----------------------------------------------------------------------------
# Random values
# ----------------------------------------------------------------------------


def _rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words])))


def _scale_shift(spec: WeightSpec, embedding_std: float = 1.0) -> tuple[float, float]:
    if spec.kind == "matrix":
        fan_in = math.prod(spec.shape[1:])
        return 2.0 / math.sqrt(fan_in), 0.0
    if spec.kind == "embedding":
        return float(embedding_std), 0.0
    if spec.kind == "norm":
        return 0.1, 1.0
    if spec.kind == "bias":
        return 0.1, 0.0
    raise ValueError(spec.kind)


_OUTLIER_DF = 4.0  # Student-t degrees of freedom for heavy-tailed matrices
_OUTLIER_COLUMNS = 0.01  # fraction of input channels that are large
_OUTLIER_GAIN = 8.0


def _outlier_column_gains(spec: WeightSpec, seed: int) -> np.ndarray:
    cols = spec.shape[-1] if len(spec.shape) == 2 else math.prod(spec.shape[1:])
    gains = np.ones(cols, dtype=np.float32)
    rng = _rng(seed, spec.name + "/outlier-columns")
    n = max(1, int(round(cols * _OUTLIER_COLUMNS)))
    gains[rng.choice(cols, size=n, replace=False)] = _OUTLIER_GAIN
    return gains


_STREAMING_PAD = next(i for i, name in NAMED_SPECIAL_TOKENS.items() if name == "[STREAMING_PAD]")


def _bf16_float(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Nearest-even BF16 bit patterns of finite float32 values."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def generate_tensor(spec: WeightSpec, seed: int, embedding_std: float = 1.0, outliers: bool = False) -> np.ndarray:
    """The tensor's BF16 bit patterns (uint16, native layout), drawn in float32
    chunks so that only the output array is held whole."""
    rng = _rng(seed, spec.name)
    scale, shift = _scale_shift(spec, embedding_std)
    heavy = outliers and spec.kind == "matrix"
    gains = _outlier_column_gains(spec, seed) if heavy else None
    out = np.empty(spec.numel, dtype=np.uint16)
    size = min(_CHUNK, max(spec.numel, 1))
    buf = np.empty(size, dtype=np.float32)
    tmp = np.empty(size, dtype=np.uint32)
    for start in range(0, spec.numel, _CHUNK):
        n = min(_CHUNK, spec.numel - start)
        x = buf[:n]
        if heavy:  # unit-variance Student-t, then the large input channels
            x[:] = rng.standard_t(_OUTLIER_DF, size=n) / math.sqrt(_OUTLIER_DF / (_OUTLIER_DF - 2.0))
            x *= gains[(start + np.arange(n)) % gains.shape[0]]
        else:
            rng.standard_normal(out=x, dtype=np.float32)
        x *= np.float32(scale)
        if shift:
            x += np.float32(shift)
        # round to nearest BF16, ties to even (finite values only: no NaN here)
        bits, r = x.view(np.uint32), tmp[:n]
        np.right_shift(bits, 16, out=r)
        r &= np.uint32(1)
        r += bits
        r += np.uint32(0x7FFF)
        r >>= 16
        out[start : start + n] = r
    return out.reshape(spec.shape)


# ----------------------------------------------------------------------------
# Config files
# ----------------------------------------------------------------------------


def params_json(d: dict[str, Any]) -> dict[str, Any]:
    """Mistral-native ``params.json``."""
    return {
        "dim": d["dim"],
        "n_layers": d["n_layers"],
        "head_dim": d["head_dim"],
        "hidden_dim": d["hidden_dim"],
        "n_heads": d["n_heads"],
        "n_kv_heads": d["n_kv_heads"],
        "use_biases": False,
        "causal": True,
        "rope_theta": float(d["rope_theta"]),
        "norm_eps": float(d["norm_eps"]),
        "vocab_size": d["vocab_size"],
        "tied_embeddings": True,
        "sliding_window": d["sliding_window"],
        "ada_rms_norm_t_cond": True,
        "ada_rms_norm_t_cond_dim": d["ada_rms_norm_t_cond_dim"],
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "dim": d["enc_dim"],
                    "n_layers": d["enc_n_layers"],
                    "head_dim": d["enc_head_dim"],
                    "hidden_dim": d["enc_hidden_dim"],
                    "n_heads": d["enc_n_heads"],
                    "n_kv_heads": d["enc_n_heads"],
                    "use_biases": True,
                    "rope_theta": float(d["enc_rope_theta"]),
                    "causal": True,
                    "norm_eps": float(d["enc_norm_eps"]),
                    "sliding_window": d["enc_sliding_window"],
                    "audio_encoding_args": {
                        "sampling_rate": d["sampling_rate"],
                        "frame_rate": d["frame_rate"],
                        "num_mel_bins": d["num_mel_bins"],
                        "hop_length": d["hop_length"],
                        "window_size": d["window_size"],
                        "global_log_mel_max": d["global_log_mel_max"],
                        "transcription_format": "streaming",
                    },
                },
                "downsample_args": {"downsample_factor": d["downsample_factor"]},
            }
        },
    }


def hf_config_json(d: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` that transformers' VoxtralRealtimeConfig loads."""
    if d["ada_rms_norm_t_cond_dim"] != 32:
        raise ValueError("the Hugging Face layout requires ada_rms_norm_t_cond_dim == 32 (fixed in transformers)")
    samples_per_tok = d["sampling_rate"] / d["frame_rate"]
    audio_length_per_tok = int(samples_per_tok // d["hop_length"])
    delay_tokens = int(int(d["transcription_delay_ms"] / 1000 * d["sampling_rate"]) // samples_per_tok)
    return {
        "architectures": ["VoxtralRealtimeForConditionalGeneration"],
        "model_type": "voxtral_realtime",
        "audio_config": {
            "model_type": "voxtral_realtime_encoder",
            "hidden_size": d["enc_dim"],
            "intermediate_size": d["enc_hidden_dim"],
            "num_hidden_layers": d["enc_n_layers"],
            "num_attention_heads": d["enc_n_heads"],
            "head_dim": d["enc_head_dim"],
            "num_mel_bins": d["num_mel_bins"],
            "hidden_act": "silu",
            "activation_function": "gelu",
            "rms_norm_eps": float(d["enc_norm_eps"]),
            "rope_parameters": {"rope_type": "default", "rope_theta": float(d["enc_rope_theta"])},
            "sliding_window": d["enc_sliding_window"],
            "max_position_embeddings": 1500,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "vocab_size": d["vocab_size"],
        },
        "text_config": {
            "model_type": "voxtral_realtime_text",
            "vocab_size": d["vocab_size"],
            "hidden_size": d["dim"],
            "intermediate_size": d["hidden_dim"],
            "num_hidden_layers": d["n_layers"],
            "num_attention_heads": d["n_heads"],
            "num_key_value_heads": d["n_kv_heads"],
            "head_dim": d["head_dim"],
            "hidden_act": "silu",
            "max_position_embeddings": 131072,
            "rms_norm_eps": float(d["norm_eps"]),
            "rope_parameters": {"rope_type": "default", "rope_theta": float(d["rope_theta"])},
            "sliding_window": d["sliding_window"],
            "tie_word_embeddings": True,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "use_cache": True,
        },
        "projector_hidden_act": "gelu",
        "audio_length_per_tok": audio_length_per_tok,
        "default_num_delay_tokens": delay_tokens,
        "downsample_factor": d["downsample_factor"],
        "tie_word_embeddings": True,
        "use_cache": True,
        "dtype": "bfloat16",
    }


def preprocessor_config_json(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "feature_extractor_type": "VoxtralRealtimeFeatureExtractor",
        "processor_class": "VoxtralRealtimeProcessor",
        "feature_size": d["num_mel_bins"],
        "sampling_rate": d["sampling_rate"],
        "hop_length": d["hop_length"],
        "n_fft": d["window_size"],
        "win_length": d["window_size"],
        "padding_value": 0.0,
        "global_log_mel_max": d["global_log_mel_max"],
        "return_attention_mask": False,
    }


class MissingExtraError(RuntimeError):
    """A package of the ``testing`` extra is not installed."""


def _mistral_common_vocab_file() -> Path:
    try:
        import mistral_common  # noqa: F401  (lazy: only needed to generate)
    except ImportError:
        raise MissingExtraError(
            "generating a checkpoint needs mistral-common (its Tekken vocabulary): pip install 'voxtral[testing]'"
        ) from None
    from importlib import resources

    path = Path(str(resources.files("mistral_common") / "data" / "tekken_240718.json"))
    if not path.is_file():  # pragma: no cover
        raise MissingExtraError(f"mistral-common is installed but {path} is missing: pip install 'voxtral[testing]'")
    return path


def build_tekken(vocab_size: int = 131072, audio: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Voxtral-style tekken.json dict from mistral-common's real vocabulary,
    truncated to ``vocab_size - 1000`` base tokens."""
    base = json.loads(_mistral_common_vocab_file().read_text(encoding="utf-8"))
    n_base = vocab_size - NUM_SPECIAL_TOKENS
    if n_base > len(base["vocab"]):
        raise ValueError(
            f"vocab_size {vocab_size} exceeds the {len(base['vocab'])} + {NUM_SPECIAL_TOKENS} available tokens"
        )
    special = [
        {"rank": i, "token_str": NAMED_SPECIAL_TOKENS.get(i, f"<SPECIAL_{i}>"), "is_control": True}
        for i in range(NUM_SPECIAL_TOKENS)
    ]
    cfg = dict(base["config"])
    cfg.update(
        num_vocab_tokens=n_base,
        default_vocab_size=vocab_size,
        default_num_special_tokens=NUM_SPECIAL_TOKENS,
        version="v7",
    )
    return {
        "config": cfg,
        "vocab": base["vocab"][:n_base],
        "special_tokens": special,
        "audio": dict(audio if audio is not None else AUDIO_SECTION),
    }


def _audio_section(d: dict[str, Any]) -> dict[str, Any]:
    a = json.loads(json.dumps(AUDIO_SECTION))
    a["sampling_rate"] = d["sampling_rate"]
    a["frame_rate"] = d["frame_rate"]
    a["audio_encoding_config"] = {
        "num_mel_bins": d["num_mel_bins"],
        "hop_length": d["hop_length"],
        "window_size": d["window_size"],
    }
    a["transcription_delay_ms"] = d["transcription_delay_ms"]
    return a


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


def _plan_shards(sizes: list[int], max_bytes: int) -> list[int]:
    """Contiguous greedy shard index per tensor; at least 2 shards when there
    are at least 2 tensors."""

    def greedy(limit: int) -> list[int]:
        idx, cur, shard = [], 0, 0
        for s in sizes:
            if cur and cur + s > limit:
                shard += 1
                cur = 0
            idx.append(shard)
            cur += s
        return idx

    plan = greedy(max_bytes)
    if plan and plan[-1] == 0 and len(sizes) >= 2:
        plan = greedy(max(1, sum(sizes) // 2))
        if plan[-1] == 0:  # one tensor holds more than half: split after it
            plan = [0] + [1] * (len(sizes) - 1)
    return plan


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def make_checkpoint(
    out_dir: str | Path,
    preset: str = "tiny",
    layout: str = "native",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Path]:
    """Write a random-weight checkpoint; returns the written directories.

    ``layout="both"`` writes ``out_dir/native`` and ``out_dir/hf`` from the
    same tensors ({"native": ..., "hf": ...}); a single layout is written to
    ``out_dir`` itself ({layout: out_dir}). ``overrides`` replace preset
    values (see ``PRESETS``; ``enc_layers``/``dec_layers`` are accepted as
    aliases of ``enc_n_layers``/``n_layers``).
    """
    if layout not in ("native", "hf", "both"):
        raise ValueError(f"layout must be native, hf or both, got {layout!r}")
    d = resolve_dims(preset, **overrides)
    out = Path(out_dir)
    if layout == "both":
        dirs = {"native": out / "native", "hf": out / "hf"}
    else:
        dirs = {layout: out}
    specs = tensor_specs(d)
    tekken = build_tekken(d["vocab_size"], _audio_section(d))  # fails before anything is on disk
    created = _make_dirs(list(dirs.values()))
    written: list[Path] = []
    try:
        _write_layouts(dirs, d, specs, tekken, seed, progress, written)
    except BaseException:
        # No half-written checkpoint: remove what this call wrote and created.
        for path in written:
            path.unlink(missing_ok=True)
        for path in created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return dirs


def _make_dirs(paths: list[Path]) -> list[Path]:
    """Create ``paths``; returns the outermost directories that did not exist."""
    created: list[Path] = []
    for p in paths:
        missing = [q for q in [p, *p.parents] if not q.exists()]
        p.mkdir(parents=True, exist_ok=True)
        if missing:
            top = missing[-1]
            if not any(top == c or c in top.parents for c in created):
                created.append(top)
    return created


def _write_layouts(
    dirs: dict[str, Path],
    d: dict[str, Any],
    specs: list[WeightSpec],
    tekken: dict[str, Any],
    seed: int,
    progress: Callable[[str], None] | None,
    written: list[Path],
) -> None:
    meta = {"format": "pt"}
    native_w = None
    hf_plan: list[int] = []
    hf_writers: list[SafetensorsWriter] = []
    try:
        if "native" in dirs:
            written.append(dirs["native"] / "consolidated.safetensors")
            native_w = SafetensorsWriter(
                written[-1],
                [TensorSpec(s.name, "BF16", s.shape) for s in specs],
                meta,
            )
        if "hf" in dirs:
            hf_plan = _plan_shards([s.numel * 2 for s in specs], d["max_shard_bytes"])
            n_shards = hf_plan[-1] + 1
            shard_names = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]
            for k in range(n_shards):
                shard_specs = [
                    TensorSpec(native_to_hf_name(s.name), "BF16", s.shape)
                    for s, p in zip(specs, hf_plan, strict=True)
                    if p == k
                ]
                written.append(dirs["hf"] / shard_names[k])
                hf_writers.append(SafetensorsWriter(written[-1], shard_specs, meta))
            index = {
                "metadata": {
                    "total_size": sum(s.numel * 2 for s in specs),
                    "total_parameters": sum(s.numel for s in specs),
                },
                "weight_map": {native_to_hf_name(s.name): shard_names[p] for s, p in zip(specs, hf_plan, strict=True)},
            }
        t0 = time.perf_counter()
        for i, s in enumerate(specs):
            t = generate_tensor(s, seed, d["embedding_std"], d["outliers"])
            if s.kind == "embedding" and d["pad_gain"] != 1.0:
                t[_STREAMING_PAD] = _bf16_bits(_bf16_float(t[_STREAMING_PAD]) * np.float32(d["pad_gain"]))
            if native_w is not None:
                native_w.write(s.name, t)
            if hf_writers:
                h = permute_for_rotate_half(t, *s.rope_heads) if s.rope_heads else t
                hf_writers[hf_plan[i]].write(native_to_hf_name(s.name), h)
            del t
            if progress and (s.numel >= 1 << 24 or i == len(specs) - 1):
                progress(f"[{i + 1}/{len(specs)}] {s.name} {list(s.shape)} ({time.perf_counter() - t0:.1f}s)")
        if native_w is not None:
            native_w.close()
        for w in hf_writers:
            w.close()
    except BaseException:
        if native_w is not None:
            native_w.abort()
        for w in hf_writers:
            w.abort()
        raise

    def put(path: Path, obj: Any, compact: bool = False) -> None:
        written.append(path)
        (_write_json_compact if compact else _write_json)(path, obj)

    if "native" in dirs:
        put(dirs["native"] / "params.json", params_json(d))
        put(dirs["native"] / "tekken.json", tekken, compact=True)
    if "hf" in dirs:
        put(dirs["hf"] / "config.json", hf_config_json(d))
        put(dirs["hf"] / "model.safetensors.index.json", index)
        put(dirs["hf"] / "preprocessor_config.json", preprocessor_config_json(d))
        put(dirs["hf"] / "tekken.json", tekken, compact=True)


def _write_json_compact(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m voxtral.testing.checkpoint",
        description="Write a random-weight Voxtral Mini 4B Realtime checkpoint in the real file formats. "
        "With --layout both (the default) OUT gets two model directories, OUT/native and OUT/hf: "
        "pass one of them to --model.",
    )
    ap.add_argument("out_dir", type=Path, metavar="OUT")
    ap.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="tiny (default): ~1 MB, 2+2 narrow layers, for tests; fullwidth: real widths and "
        "vocabulary with 2+2 layers (~1.45 GB per layout); full: the real 4.4 B-parameter sizes "
        "(8.9 GB per layout)",
    )
    ap.add_argument(
        "--layout",
        choices=["native", "hf", "both"],
        default="both",
        help="native: Mistral's consolidated.safetensors + params.json (written into OUT); hf: Hugging "
        "Face config.json + model*.safetensors (into OUT); both (default): OUT/native and OUT/hf",
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0); the same seed gives the same bytes")
    ap.add_argument("--enc-layers", type=int, default=None, help="encoder layers (default: the preset's)")
    ap.add_argument("--dec-layers", type=int, default=None, help="decoder layers (default: the preset's)")
    ap.add_argument("--vocab-size", type=int, default=None, help="vocabulary size incl. 1000 specials")
    ap.add_argument("--embedding-std", type=float, default=None, help="token embedding std (default: the preset's)")
    ap.add_argument(
        "--pad-gain",
        type=float,
        default=None,
        help="scale the [STREAMING_PAD] embedding row: greedy output becomes mostly pads (default 1)",
    )
    ap.add_argument(
        "--outliers",
        action="store_true",
        help="heavy-tailed matrices with a few large input channels (quantization accuracy tests)",
    )
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    log = None if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        dirs = make_checkpoint(
            a.out_dir,
            preset=a.preset,
            layout=a.layout,
            seed=a.seed,
            progress=log,
            enc_n_layers=a.enc_layers,
            n_layers=a.dec_layers,
            vocab_size=a.vocab_size,
            embedding_std=a.embedding_std,
            outliers=a.outliers or None,
            pad_gain=a.pad_gain,
        )
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was left behind", file=sys.stderr)
        return 130
    for k, p in dirs.items():
        print(f"{k}: {p}")
    if not a.quiet:
        print(f"done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
