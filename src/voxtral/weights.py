"""Model weights: both on-disk layouts mapped into one internal form.

Matrices stay BF16 (uint16 bit patterns) as zero-copy views of the mmapped
files, so loading the 8.9 GB checkpoint reads only headers and the small
vectors (norms, biases), which are converted to float32.

The Hugging Face files name tensors as transformers writes them
(``audio_tower.*``, ``language_model.model.*``...) or by their in-memory
module names (``model.audio_tower.*``...): both are accepted.

The Hugging Face layout stores q/k rows permuted for rotate-half RoPE. Since
attention only uses q.k, we keep those rows as they are and apply RoPE in the
matching ("half") indexing: zero-copy, and the same model.

A quantized model directory (``model.gguf`` + ``tekken.json``, written by
``python -m voxtral quantize``) holds the Mistral-native tensors; its linear
matrices become ``QuantMatrix`` views of the mapped file.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .config import ModelConfig, from_hf_config, from_params_dict, from_params_json
from .errors import CheckpointError, ModelFileError
from .layout import GGUF_FILE, detect_layout
from .qformats import BLOCK
from .safetensors_io import SafetensorsFile, bf16_to_float32, float_to_bf16

_NATIVE_ENC = "mm_streams_embeddings.embedding_module.whisper_encoder."
_NATIVE_ADAPTER = "mm_streams_embeddings.embedding_module.audio_language_projection."
_NATIVE_TOK = "mm_streams_embeddings.embedding_module.tok_embeddings.weight"


@dataclass
class EncoderLayerWeights:
    attn_norm: np.ndarray
    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ffn_norm: np.ndarray
    w1: np.ndarray  # gate
    w3: np.ndarray  # up
    w2: np.ndarray  # down
    b2: np.ndarray


@dataclass
class DecoderLayerWeights:
    attn_norm: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ffn_norm: np.ndarray
    w1: np.ndarray
    w3: np.ndarray
    w2: np.ndarray
    ada_down: np.ndarray
    ada_up: np.ndarray


@dataclass
class Weights:
    """Every tensor of the model. Matrices are BF16 bits (uint16 views of the
    mapped file) or, in a quantized model, ``QuantMatrix`` for the linear
    matrices and the embedding; vectors are float32."""

    conv1_w: np.ndarray
    conv1_b: np.ndarray
    conv2_w: np.ndarray
    conv2_b: np.ndarray
    encoder_layers: list[EncoderLayerWeights]
    encoder_norm: np.ndarray
    adapter1: np.ndarray
    adapter2: np.ndarray
    tok_embeddings: np.ndarray  # also the LM head (tied)
    decoder_layers: list[DecoderLayerWeights]
    decoder_norm: np.ndarray
    quant_type: str | None = None  # the linear matrices' type in a quantized model, else None (BF16)


# The matrices every product goes through linear() with (quantizable), per layer.
LINEAR_FIELDS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def is_linear_key(key: str) -> bool:
    """True for the internal keys of the encoder/decoder layers' linear
    matrices and the adapter's two matrices (not the embedding, conv stem or ada-norm)."""
    if key in ("adapter1", "adapter2"):
        return True
    parts = key.split(".")
    return len(parts) == 3 and parts[0] in ("enc", "dec") and parts[2] in LINEAR_FIELDS


def native_names(cfg: ModelConfig) -> dict[str, str]:
    """internal key -> Mistral-native tensor name (the names GGUF files use)."""
    return _native_names(cfg)


def weights_by_key(cfg: ModelConfig, w: Weights) -> dict[str, np.ndarray]:
    """Inverse of the assembly: internal key -> tensor, in expected_shapes order."""
    got: dict[str, np.ndarray] = {}
    for key in expected_shapes(cfg):
        parts = key.split(".")
        if len(parts) == 3:
            layers = w.encoder_layers if parts[0] == "enc" else w.decoder_layers
            got[key] = getattr(layers[int(parts[1])], parts[2])
        else:
            got[key] = getattr(w, key)
    return got


def _native_names(cfg: ModelConfig) -> dict[str, str]:
    """internal key -> native tensor name."""
    n = {
        "conv1_w": _NATIVE_ENC + "conv_layers.0.conv.weight",
        "conv1_b": _NATIVE_ENC + "conv_layers.0.conv.bias",
        "conv2_w": _NATIVE_ENC + "conv_layers.1.conv.weight",
        "conv2_b": _NATIVE_ENC + "conv_layers.1.conv.bias",
        "encoder_norm": _NATIVE_ENC + "transformer.norm.weight",
        "adapter1": _NATIVE_ADAPTER + "0.weight",
        "adapter2": _NATIVE_ADAPTER + "2.weight",
        "tok_embeddings": _NATIVE_TOK,
        "decoder_norm": "norm.weight",
    }
    for i in range(cfg.encoder.n_layers):
        p = f"{_NATIVE_ENC}transformer.layers.{i}."
        n.update(
            {
                f"enc.{i}.attn_norm": p + "attention_norm.weight",
                f"enc.{i}.wq": p + "attention.wq.weight",
                f"enc.{i}.bq": p + "attention.wq.bias",
                f"enc.{i}.wk": p + "attention.wk.weight",
                f"enc.{i}.wv": p + "attention.wv.weight",
                f"enc.{i}.bv": p + "attention.wv.bias",
                f"enc.{i}.wo": p + "attention.wo.weight",
                f"enc.{i}.bo": p + "attention.wo.bias",
                f"enc.{i}.ffn_norm": p + "ffn_norm.weight",
                f"enc.{i}.w1": p + "feed_forward.w1.weight",
                f"enc.{i}.w3": p + "feed_forward.w3.weight",
                f"enc.{i}.w2": p + "feed_forward.w2.weight",
                f"enc.{i}.b2": p + "feed_forward.w2.bias",
            }
        )
    for i in range(cfg.decoder.n_layers):
        p = f"layers.{i}."
        n.update(
            {
                f"dec.{i}.attn_norm": p + "attention_norm.weight",
                f"dec.{i}.wq": p + "attention.wq.weight",
                f"dec.{i}.wk": p + "attention.wk.weight",
                f"dec.{i}.wv": p + "attention.wv.weight",
                f"dec.{i}.wo": p + "attention.wo.weight",
                f"dec.{i}.ffn_norm": p + "ffn_norm.weight",
                f"dec.{i}.w1": p + "feed_forward.w1.weight",
                f"dec.{i}.w3": p + "feed_forward.w3.weight",
                f"dec.{i}.w2": p + "feed_forward.w2.weight",
                f"dec.{i}.ada_down": p + "ada_rms_norm_t_cond.0.weight",
                f"dec.{i}.ada_up": p + "ada_rms_norm_t_cond.2.weight",
            }
        )
    return n


def _hf_names(cfg: ModelConfig) -> dict[str, str]:
    """internal key -> Hugging Face tensor name."""
    e, d = "model.audio_tower.", "model.language_model."
    n = {
        "conv1_w": e + "embedder.conv1.weight",
        "conv1_b": e + "embedder.conv1.bias",
        "conv2_w": e + "embedder.conv2.weight",
        "conv2_b": e + "embedder.conv2.bias",
        "encoder_norm": e + "norm.weight",
        "adapter1": "model.multi_modal_projector.linear_1.weight",
        "adapter2": "model.multi_modal_projector.linear_2.weight",
        "tok_embeddings": d + "embed_tokens.weight",
        "decoder_norm": d + "norm.weight",
    }
    for i in range(cfg.encoder.n_layers):
        p = f"{e}layers.{i}."
        n.update(
            {
                f"enc.{i}.attn_norm": p + "self_attn_layer_norm.weight",
                f"enc.{i}.wq": p + "self_attn.q_proj.weight",
                f"enc.{i}.bq": p + "self_attn.q_proj.bias",
                f"enc.{i}.wk": p + "self_attn.k_proj.weight",
                f"enc.{i}.wv": p + "self_attn.v_proj.weight",
                f"enc.{i}.bv": p + "self_attn.v_proj.bias",
                f"enc.{i}.wo": p + "self_attn.o_proj.weight",
                f"enc.{i}.bo": p + "self_attn.o_proj.bias",
                f"enc.{i}.ffn_norm": p + "final_layer_norm.weight",
                f"enc.{i}.w1": p + "mlp.gate_proj.weight",
                f"enc.{i}.w3": p + "mlp.up_proj.weight",
                f"enc.{i}.w2": p + "mlp.down_proj.weight",
                f"enc.{i}.b2": p + "mlp.down_proj.bias",
            }
        )
    for i in range(cfg.decoder.n_layers):
        p = f"{d}layers.{i}."
        n.update(
            {
                f"dec.{i}.attn_norm": p + "input_layernorm.weight",
                f"dec.{i}.wq": p + "self_attn.q_proj.weight",
                f"dec.{i}.wk": p + "self_attn.k_proj.weight",
                f"dec.{i}.wv": p + "self_attn.v_proj.weight",
                f"dec.{i}.wo": p + "self_attn.o_proj.weight",
                f"dec.{i}.ffn_norm": p + "post_attention_layernorm.weight",
                f"dec.{i}.w1": p + "mlp.gate_proj.weight",
                f"dec.{i}.w3": p + "mlp.up_proj.weight",
                f"dec.{i}.w2": p + "mlp.down_proj.weight",
                f"dec.{i}.ada_down": p + "ada_rms_norm.linear1.weight",
                f"dec.{i}.ada_up": p + "ada_rms_norm.linear2.weight",
            }
        )
    return n


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """internal key -> shape, every dimension from the config."""
    e, d, a = cfg.encoder, cfg.decoder, cfg.audio
    eq, ekv = e.n_heads * e.head_dim, e.n_kv_heads * e.head_dim
    dq, dkv = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
    s = {
        "conv1_w": (e.dim, a.num_mel_bins, 3),
        "conv1_b": (e.dim,),
        "conv2_w": (e.dim, e.dim, 3),
        "conv2_b": (e.dim,),
        "encoder_norm": (e.dim,),
        "adapter1": (d.dim, e.dim * a.downsample_factor),
        "adapter2": (d.dim, d.dim),
        "tok_embeddings": (d.vocab_size, d.dim),
        "decoder_norm": (d.dim,),
    }
    for i in range(e.n_layers):
        s.update(
            {
                f"enc.{i}.attn_norm": (e.dim,),
                f"enc.{i}.wq": (eq, e.dim),
                f"enc.{i}.bq": (eq,),
                f"enc.{i}.wk": (ekv, e.dim),
                f"enc.{i}.wv": (ekv, e.dim),
                f"enc.{i}.bv": (ekv,),
                f"enc.{i}.wo": (e.dim, eq),
                f"enc.{i}.bo": (e.dim,),
                f"enc.{i}.ffn_norm": (e.dim,),
                f"enc.{i}.w1": (e.hidden_dim, e.dim),
                f"enc.{i}.w3": (e.hidden_dim, e.dim),
                f"enc.{i}.w2": (e.dim, e.hidden_dim),
                f"enc.{i}.b2": (e.dim,),
            }
        )
    for i in range(d.n_layers):
        s.update(
            {
                f"dec.{i}.attn_norm": (d.dim,),
                f"dec.{i}.wq": (dq, d.dim),
                f"dec.{i}.wk": (dkv, d.dim),
                f"dec.{i}.wv": (dkv, d.dim),
                f"dec.{i}.wo": (d.dim, dq),
                f"dec.{i}.ffn_norm": (d.dim,),
                f"dec.{i}.w1": (d.hidden_dim, d.dim),
                f"dec.{i}.w3": (d.hidden_dim, d.dim),
                f"dec.{i}.w2": (d.dim, d.hidden_dim),
                f"dec.{i}.ada_down": (d.ada_cond_dim, d.dim),
                f"dec.{i}.ada_up": (d.dim, d.ada_cond_dim),
            }
        )
    return s


def _to_f32(arr: np.ndarray, dtype_name: str) -> np.ndarray:
    if dtype_name == "BF16":
        return bf16_to_float32(arr)
    return np.ascontiguousarray(arr, dtype=np.float32)


# The Hugging Face files as transformers' save_pretrained writes them (and the
# hub serves them) use other prefixes than the in-memory module names, which
# transformers maps on load. We accept both, as it does: published prefix ->
# in-memory prefix.
_HF_PUBLISHED_PREFIXES = (
    ("audio_tower.", "model.audio_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)


def hf_module_name(name: str) -> str:
    """The in-memory (``model.``-prefixed) name of an HF tensor name, whichever way it is written."""
    for published, module in _HF_PUBLISHED_PREFIXES:
        if name.startswith(published):
            return module + name[len(published) :]
    return name


class _TensorSource:
    """Name -> (file, name in the file) over one or several safetensors files;
    ``rename`` maps names as written to the names the loader asks for."""

    def __init__(self, files: list[SafetensorsFile], rename=lambda name: name):
        self.files = files
        self.where: dict[str, SafetensorsFile] = {}
        self.stored: dict[str, str] = {}  # name asked for -> name as written
        for f in files:
            for stored in f.keys():
                name = rename(stored)
                if name in self.where:
                    raise CheckpointError(
                        f"tensor {name} appears twice: as {self.stored[name]} in {self.where[name].path} "
                        f"and as {stored} in {f.path}"
                    )
                self.where[name] = f
                self.stored[name] = stored


def _assemble(cfg: ModelConfig, names: dict[str, str], src: _TensorSource, optional: dict[str, str]) -> Weights:
    """``optional``: tensors that may be present, each with the internal key whose shape it must have."""
    shapes = expected_shapes(cfg)
    wanted = set(names.values())
    unexpected = sorted(n for n in src.where if n not in wanted and n not in optional)
    if unexpected:
        more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise CheckpointError(
            f"{src.where[unexpected[0]].path}: tensors not part of the configured model: "
            f"{', '.join(src.stored[n] for n in unexpected[:3])}{more} (config and checkpoint disagree?)"
        )
    for name, like in optional.items():  # e.g. a tied lm_head saved anyway: it must fit the embeddings
        f = src.where.get(name)
        if f is not None and f.shape(src.stored[name]) != shapes[like]:
            raise CheckpointError(
                f"{f.path}: tensor {src.stored[name]} has shape "
                f"{list(f.shape(src.stored[name]))}, expected {list(shapes[like])}"
            )
    got: dict[str, np.ndarray] = {}
    rounded: list[str] = []  # matrices stored as F32/F16 that BF16 cannot hold exactly
    for key, wanted_name in names.items():
        f = src.where.get(wanted_name)
        if f is None:
            files = ", ".join(str(x.path.name) for x in src.files)
            raise CheckpointError(f"{src.files[0].path.parent}: tensor {wanted_name} is missing from {files}")
        name = src.stored[wanted_name]
        shape = f.shape(name)
        if shape != shapes[key]:
            raise CheckpointError(f"{f.path}: tensor {name} has shape {list(shape)}, expected {list(shapes[key])}")
        dtype_name = f.dtype_name(name)
        if len(shape) >= 2:
            if dtype_name == "BF16":
                got[key] = f.tensor(name)
            elif dtype_name in ("F32", "F16"):  # as save_pretrained writes a float32 or float16 model
                got[key] = _matrix_to_bf16(f, name, dtype_name, rounded)
            else:
                raise CheckpointError(
                    f"{f.path}: tensor {name} is {dtype_name}; weight matrices must be BF16, F16 or F32"
                )
        else:
            if dtype_name not in ("BF16", "F16", "F32"):
                raise CheckpointError(f"{f.path}: tensor {name} has unsupported dtype {dtype_name}")
            vec = _to_f32(f.tensor(name), dtype_name)
            if not np.all(np.isfinite(vec)):
                raise CheckpointError(f"{f.path}: tensor {name} contains NaN or Inf")
            got[key] = vec
    if rounded:
        warnings.warn(
            f"{src.files[0].path.parent}: {len(rounded)} weight matrices are stored in a wider type than "
            "BF16 and were rounded to BF16 once at load (the model runs on BF16 weights)",
            PrecisionWarning,
            stacklevel=3,
        )
    return _from_keys(cfg, got)


class PrecisionWarning(UserWarning):
    """Weights were rounded at load (F32/F16 matrices that BF16 cannot hold exactly)."""


def _matrix_to_bf16(f: SafetensorsFile, name: str, dtype_name: str, rounded: list[str]) -> np.ndarray:
    """A matrix saved as F32 or F16, as BF16 bits: exact when every value is
    BF16-representable (a BF16 model saved in float32), else rounded to nearest even."""
    bits, exact, finite = float_to_bf16(f.tensor(name))
    if not finite:
        raise CheckpointError(f"{f.path}: tensor {name} contains NaN or Inf")
    if not exact:
        rounded.append(name)
    return bits


def _from_keys(cfg: ModelConfig, got: dict, quant_type: str | None = None) -> Weights:
    def layer(cls, prefix, i):
        return cls(**{fl.name: got[f"{prefix}.{i}.{fl.name}"] for fl in fields(cls)})

    return Weights(
        conv1_w=got["conv1_w"],
        conv1_b=got["conv1_b"],
        conv2_w=got["conv2_w"],
        conv2_b=got["conv2_b"],
        encoder_layers=[layer(EncoderLayerWeights, "enc", i) for i in range(cfg.encoder.n_layers)],
        encoder_norm=got["encoder_norm"],
        adapter1=got["adapter1"],
        adapter2=got["adapter2"],
        tok_embeddings=got["tok_embeddings"],
        decoder_layers=[layer(DecoderLayerWeights, "dec", i) for i in range(cfg.decoder.n_layers)],
        decoder_norm=got["decoder_norm"],
        quant_type=quant_type,
    )


def load_native(model_dir: Path) -> tuple[ModelConfig, Weights]:
    cfg = from_params_json(model_dir / "params.json")
    src = _TensorSource([SafetensorsFile(model_dir / "consolidated.safetensors")])
    return cfg, _assemble(cfg, _native_names(cfg), src, optional={})


def load_hf(model_dir: Path, audio_section: dict | None = None) -> tuple[ModelConfig, Weights]:
    cfg = from_hf_config(model_dir / "config.json", audio_section)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shard_names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: malformed index ({exc})") from None
        for shard in shard_names:
            if Path(shard).name != shard:
                raise CheckpointError(f"{index}: shard name {shard!r} must be a plain file name")
        files = [SafetensorsFile(model_dir / s) for s in shard_names]
        src = _TensorSource(files, hf_module_name)
        for stored, shard in weight_map.items():
            name = hf_module_name(stored)
            if name in src.where and src.where[name].path.name != shard:
                raise CheckpointError(f"{index}: says {stored} is in {shard}, found in {src.where[name].path.name}")
    else:
        shard_paths = sorted(model_dir.glob("model*.safetensors"))
        if not shard_paths:
            raise CheckpointError(f"{model_dir}: no model*.safetensors files")
        src = _TensorSource([SafetensorsFile(p) for p in shard_paths], hf_module_name)
    # lm_head may be saved although tied; it must then have the embeddings' shape.
    return cfg, _assemble(cfg, _hf_names(cfg), src, optional={"lm_head.weight": "tok_embeddings"})


def load_gguf(model_dir: Path) -> tuple[ModelConfig, Weights]:
    """A quantized model directory: config from the file's params.json text,
    tensors validated against it and returned as views of the mapped file."""
    from . import gguf_io

    path = Path(model_dir) / GGUF_FILE
    f = gguf_io.GGUFFile(path)
    arch = f.get_str("general.architecture")
    if arch != gguf_io.ARCHITECTURE:
        raise CheckpointError(f"{path}: architecture is {arch!r}, expected {gguf_io.ARCHITECTURE!r}")
    version = f.get_int(gguf_io.KEY_FORMAT_VERSION)
    if version != gguf_io.FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: voxtral GGUF format version {version}; this voxtral reads version {gguf_io.FORMAT_VERSION}"
        )
    params = f.get_json(gguf_io.KEY_PARAMS_JSON)
    try:
        cfg = from_params_dict(params, f"{path} ({gguf_io.KEY_PARAMS_JSON})")
    except ModelFileError as exc:
        raise CheckpointError(str(exc)) from None
    quant_type = f.get_str(gguf_io.KEY_QUANT_TYPE)
    if quant_type not in BLOCK:
        raise CheckpointError(f"{path}: unknown quantization type {quant_type!r}")

    names = _native_names(cfg)
    shapes = expected_shapes(cfg)
    wanted = set(names.values())
    unexpected = sorted(n for n in f.tensors if n not in wanted)
    if unexpected:
        raise CheckpointError(f"{path}: tensors not part of the configured model: {', '.join(unexpected[:3])}")
    got: dict = {}
    for key, name in names.items():
        if name not in f.tensors:
            raise CheckpointError(f"{path}: tensor {name} is missing")
        ttype, shape, data = f.tensors[name]
        if shape != shapes[key]:
            raise CheckpointError(f"{path}: tensor {name} has shape {list(shape)}, expected {list(shapes[key])}")
        quantizable = is_linear_key(key) or key == "tok_embeddings"
        if len(shape) >= 2 and ttype in BLOCK and quantizable:
            got[key] = f.quant_matrix(name)
        elif len(shape) >= 2 and ttype == "bf16":
            got[key] = data
        elif len(shape) == 1 and ttype in ("f32", "f16", "bf16"):
            vec = _to_f32(data, "BF16") if ttype == "bf16" else np.asarray(data, dtype=np.float32)
            if not np.all(np.isfinite(vec)):
                raise CheckpointError(f"{path}: tensor {name} contains NaN or Inf")
            got[key] = vec
        else:
            allowed = "Q8_0/Q4_0/Q4_K or BF16" if quantizable else ("BF16" if len(shape) >= 2 else "F32/F16/BF16")
            raise CheckpointError(f"{path}: tensor {name} is {ttype.upper()}, expected {allowed}")
    return cfg, _from_keys(cfg, got, quant_type)


def load_weights(model_dir: str | Path, audio_section: dict | None = None) -> tuple[ModelConfig, Weights, str]:
    """Load config + weights of any layout; returns (config, weights, layout),
    layout being "native", "hf" or "gguf"."""
    model_dir = Path(model_dir)
    layout = detect_layout(model_dir)
    if layout == "native":
        cfg, w = load_native(model_dir)
    elif layout == "gguf":
        cfg, w = load_gguf(model_dir)
    else:
        cfg, w = load_hf(model_dir, audio_section)
    return cfg, w, layout
