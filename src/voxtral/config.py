"""Model configuration: read from params.json (Mistral-native) or config.json
(Hugging Face), validated, so that no dimension is ever hard-coded elsewhere."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, UsageError

# Delays are whole decoder steps; the model was trained for 80..2400 ms.
MIN_DELAY_MS = 80
MAX_DELAY_MS = 2400
DEFAULT_DELAY_MS = 480
# One decoder step is 80 ms in every published config (frame_rate 12.5 Hz);
# a model of another frame rate is checked against its own (delay_tokens).
DELAY_STEP_MS = 80


@dataclass(frozen=True)
class EncoderConfig:
    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    rope_theta: float
    norm_eps: float
    sliding_window: int


@dataclass(frozen=True)
class DecoderConfig:
    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    rope_theta: float
    norm_eps: float
    vocab_size: int
    sliding_window: int
    ada_cond_dim: int
    tied_embeddings: bool


@dataclass(frozen=True)
class AudioConfig:
    sampling_rate: int
    frame_rate: float
    num_mel_bins: int
    hop_length: int
    window_size: int
    global_log_mel_max: float
    downsample_factor: int
    # Conv stem: kernel 3, strides 1 then 2 (architecture, not in params.json).
    conv_stride: int = 2

    @property
    def samples_per_token(self) -> int:
        return int(round(self.sampling_rate / self.frame_rate))

    @property
    def mel_frames_per_token(self) -> int:
        return self.samples_per_token // self.hop_length


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig
    decoder: DecoderConfig
    audio: AudioConfig
    # "interleaved": Mistral-native q/k rows (pairs 2i, 2i+1);
    # "half": HF rows permuted for rotate-half. Same model, different RoPE indexing.
    rope_style: str
    source: str = ""

    # ---- schedule: silence tokens before the audio and after it (see stream.py) ----
    n_left_pad_tokens: int = 32
    n_right_pad_buffer_tokens: int = 10

    def delay_tokens(self, delay_ms: int) -> int:
        """Decoder steps of a delay (its range is checked where options enter: options.py)."""
        ms_per_token = 1000.0 / self.audio.frame_rate
        n = delay_ms / ms_per_token
        if abs(n - round(n)) > 1e-9:
            raise UsageError(f"delay {delay_ms} ms is not a multiple of {ms_per_token:g} ms")
        return int(round(n))

    def validate(self) -> None:
        enc, dec, audio = self.encoder, self.decoder, self.audio
        for name, group in (("encoder", enc), ("decoder", dec)):
            for field in ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "sliding_window"):
                value = getattr(group, field)
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise ConfigError(f"{self.source}: {name} {field} must be a positive integer, got {value!r}")
            if group.n_heads % group.n_kv_heads:
                raise ConfigError(
                    f"{self.source}: {name} n_heads ({group.n_heads}) "
                    f"is not a multiple of n_kv_heads ({group.n_kv_heads})"
                )
            if group.head_dim % 2:
                raise ConfigError(f"{self.source}: {name} head_dim must be even for RoPE, got {group.head_dim}")
            if not (group.rope_theta > 0 and math.isfinite(group.rope_theta)):
                raise ConfigError(f"{self.source}: {name} rope_theta must be positive, got {group.rope_theta}")
            if not (0 < group.norm_eps < 1):
                raise ConfigError(f"{self.source}: {name} norm_eps out of range: {group.norm_eps}")
        if dec.vocab_size <= 0 or dec.ada_cond_dim <= 0:
            raise ConfigError(f"{self.source}: decoder vocab_size and ada_rms_norm_t_cond_dim must be positive")
        if enc.n_heads != enc.n_kv_heads:
            raise ConfigError(f"{self.source}: the encoder uses full multi-head attention (n_kv_heads == n_heads)")
        if not dec.tied_embeddings:
            raise ConfigError(f"{self.source}: only tied token embeddings / LM head are supported")
        if audio.sampling_rate <= 0 or audio.hop_length <= 0 or audio.window_size <= 0 or audio.num_mel_bins <= 0:
            raise ConfigError(f"{self.source}: audio encoding arguments must be positive")
        if not audio.frame_rate > 0 or not math.isfinite(audio.sampling_rate / audio.frame_rate):
            raise ConfigError(f"{self.source}: frame_rate must be a positive number, got {audio.frame_rate!r}")
        spt = audio.sampling_rate / audio.frame_rate
        if abs(spt - round(spt)) > 1e-9 or round(spt) % audio.hop_length:
            raise ConfigError(
                f"{self.source}: sampling_rate/frame_rate ({spt:g} samples per token) must be a whole "
                f"multiple of hop_length ({audio.hop_length})"
            )
        if audio.mel_frames_per_token != audio.conv_stride * audio.downsample_factor:
            raise ConfigError(
                f"{self.source}: {audio.mel_frames_per_token} mel frames per token do not match the conv stride "
                f"({audio.conv_stride}) x downsample_factor ({audio.downsample_factor})"
            )
        if audio.window_size % 2:
            raise ConfigError(f"{self.source}: window_size must be even, got {audio.window_size}")


def _require(mapping: dict[str, Any], key: str, where: str, source: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ConfigError(f"{source}: missing key {where}{key}")
    return mapping[key]


def _as_int(value: Any, key: str, source: str) -> int:
    # NaN and inf are floats that int() refuses: check finiteness first
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or int(value) != value
    ):
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    return int(value)


def _as_float(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
    return float(value)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def from_params_json(path: str | Path) -> ModelConfig:
    """Parse a Mistral-native params.json."""
    path = Path(path)
    return from_params_dict(_load_json(path), str(path))


def from_params_dict(p: dict[str, Any], src: str) -> ModelConfig:
    """Parse the content of a Mistral-native params.json (``src`` names it in errors)."""
    if not isinstance(p, dict):
        raise ConfigError(f"{src}: expected a JSON object")

    def geti(d: dict[str, Any], key: str, where: str = "") -> int:
        return _as_int(_require(d, key, where, src), where + key, src)

    def getf(d: dict[str, Any], key: str, where: str = "") -> float:
        return _as_float(_require(d, key, where, src), where + key, src)

    mm = _require(p, "multimodal", "", src)
    wm = _require(mm, "whisper_model_args", "multimodal.", src)
    ea = _require(wm, "encoder_args", "multimodal.whisper_model_args.", src)
    ew = "multimodal.whisper_model_args.encoder_args."
    aa = _require(ea, "audio_encoding_args", ew, src)
    aw = ew + "audio_encoding_args."
    ds = _require(wm, "downsample_args", "multimodal.whisper_model_args.", src)

    if p.get("use_biases", False):
        raise ConfigError(f"{src}: decoder use_biases=true is not supported by this model")
    if not ea.get("use_biases", True):
        raise ConfigError(f"{src}: encoder use_biases=false is not supported by this model")
    if p.get("causal", True) is not True or ea.get("causal", True) is not True:
        raise ConfigError(f"{src}: only causal (streaming) models are supported")
    if p.get("ada_rms_norm_t_cond", True) is not True:
        raise ConfigError(f"{src}: ada_rms_norm_t_cond must be true for Voxtral Realtime")

    cfg = ModelConfig(
        encoder=EncoderConfig(
            dim=geti(ea, "dim", ew),
            n_layers=geti(ea, "n_layers", ew),
            head_dim=geti(ea, "head_dim", ew),
            hidden_dim=geti(ea, "hidden_dim", ew),
            n_heads=geti(ea, "n_heads", ew),
            n_kv_heads=_as_int(ea.get("n_kv_heads", ea.get("n_heads")), ew + "n_kv_heads", src),
            rope_theta=getf(ea, "rope_theta", ew),
            norm_eps=getf(ea, "norm_eps", ew),
            sliding_window=geti(ea, "sliding_window", ew),
        ),
        decoder=DecoderConfig(
            dim=geti(p, "dim"),
            n_layers=geti(p, "n_layers"),
            head_dim=geti(p, "head_dim"),
            hidden_dim=geti(p, "hidden_dim"),
            n_heads=geti(p, "n_heads"),
            n_kv_heads=geti(p, "n_kv_heads"),
            rope_theta=getf(p, "rope_theta"),
            norm_eps=getf(p, "norm_eps"),
            vocab_size=geti(p, "vocab_size"),
            sliding_window=geti(p, "sliding_window"),
            ada_cond_dim=geti(p, "ada_rms_norm_t_cond_dim"),
            tied_embeddings=bool(p.get("tied_embeddings", True)),
        ),
        audio=AudioConfig(
            sampling_rate=geti(aa, "sampling_rate", aw),
            frame_rate=getf(aa, "frame_rate", aw),
            num_mel_bins=geti(aa, "num_mel_bins", aw),
            hop_length=geti(aa, "hop_length", aw),
            window_size=geti(aa, "window_size", aw),
            global_log_mel_max=getf(aa, "global_log_mel_max", aw),
            downsample_factor=geti(ds, "downsample_factor", "multimodal.whisper_model_args.downsample_args."),
        ),
        rope_style="interleaved",
        source=src,
    )
    cfg.validate()
    return cfg


def to_params_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The Mistral-native params.json content of ``cfg`` (inverse of
    :func:`from_params_dict`); describes a model in the native q/k row order."""
    e, d, a = cfg.encoder, cfg.decoder, cfg.audio
    return {
        "dim": d.dim,
        "n_layers": d.n_layers,
        "head_dim": d.head_dim,
        "hidden_dim": d.hidden_dim,
        "n_heads": d.n_heads,
        "n_kv_heads": d.n_kv_heads,
        "use_biases": False,
        "causal": True,
        "rope_theta": d.rope_theta,
        "norm_eps": d.norm_eps,
        "vocab_size": d.vocab_size,
        "tied_embeddings": d.tied_embeddings,
        "sliding_window": d.sliding_window,
        "ada_rms_norm_t_cond": True,
        "ada_rms_norm_t_cond_dim": d.ada_cond_dim,
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "dim": e.dim,
                    "n_layers": e.n_layers,
                    "head_dim": e.head_dim,
                    "hidden_dim": e.hidden_dim,
                    "n_heads": e.n_heads,
                    "n_kv_heads": e.n_kv_heads,
                    "use_biases": True,
                    "rope_theta": e.rope_theta,
                    "causal": True,
                    "norm_eps": e.norm_eps,
                    "sliding_window": e.sliding_window,
                    "audio_encoding_args": {
                        "sampling_rate": a.sampling_rate,
                        "frame_rate": a.frame_rate,
                        "num_mel_bins": a.num_mel_bins,
                        "hop_length": a.hop_length,
                        "window_size": a.window_size,
                        "global_log_mel_max": a.global_log_mel_max,
                        "transcription_format": "streaming",
                    },
                },
                "downsample_args": {"downsample_factor": a.downsample_factor},
            }
        },
    }


def from_hf_config(path: str | Path, audio_section: dict[str, Any] | None = None) -> ModelConfig:
    """Parse a Hugging Face config.json (VoxtralRealtimeConfig).

    The HF config does not carry the audio front end; it comes from
    preprocessor_config.json when present, else from tekken.json's ``audio``
    section (``audio_section``), else the feature extractor's defaults.
    """
    path = Path(path)
    c = _load_json(path)
    src = str(path)
    if c.get("model_type") not in (None, "voxtral_realtime"):
        raise ConfigError(f"{src}: model_type is {c.get('model_type')!r}, expected 'voxtral_realtime'")
    ac = _require(c, "audio_config", "", src)
    tc = _require(c, "text_config", "", src)

    def geti(d: dict[str, Any], key: str, where: str) -> int:
        return _as_int(_require(d, key, where, src), where + key, src)

    def getf(d: dict[str, Any], key: str, where: str) -> float:
        return _as_float(_require(d, key, where, src), where + key, src)

    def theta(d: dict[str, Any], where: str) -> float:
        rp = d.get("rope_parameters") or {}
        if not isinstance(rp, dict):
            raise ConfigError(f"{src}: {where}rope_parameters must be an object, got {type(rp).__name__}")
        if "rope_theta" in rp:
            return _as_float(rp["rope_theta"], where + "rope_parameters.rope_theta", src)
        return getf(d, "rope_theta", where)

    enc_heads = geti(ac, "num_attention_heads", "audio_config.")
    enc = EncoderConfig(
        dim=geti(ac, "hidden_size", "audio_config."),
        n_layers=geti(ac, "num_hidden_layers", "audio_config."),
        head_dim=geti(ac, "head_dim", "audio_config."),
        hidden_dim=geti(ac, "intermediate_size", "audio_config."),
        n_heads=enc_heads,
        n_kv_heads=_as_int(ac.get("num_key_value_heads", enc_heads), "audio_config.num_key_value_heads", src),
        rope_theta=theta(ac, "audio_config."),
        norm_eps=getf(ac, "rms_norm_eps", "audio_config."),
        sliding_window=geti(ac, "sliding_window", "audio_config."),
    )
    dec = DecoderConfig(
        dim=geti(tc, "hidden_size", "text_config."),
        n_layers=geti(tc, "num_hidden_layers", "text_config."),
        head_dim=geti(tc, "head_dim", "text_config."),
        hidden_dim=geti(tc, "intermediate_size", "text_config."),
        n_heads=geti(tc, "num_attention_heads", "text_config."),
        n_kv_heads=geti(tc, "num_key_value_heads", "text_config."),
        rope_theta=theta(tc, "text_config."),
        norm_eps=getf(tc, "rms_norm_eps", "text_config."),
        vocab_size=geti(tc, "vocab_size", "text_config."),
        sliding_window=geti(tc, "sliding_window", "text_config."),
        ada_cond_dim=32,  # fixed in transformers' VoxtralRealtimeTextAdaRmsNorm
        tied_embeddings=bool(c.get("tie_word_embeddings", tc.get("tie_word_embeddings", True))),
    )
    if ac.get("num_mel_bins") is not None:
        n_mels = _as_int(ac["num_mel_bins"], "audio_config.num_mel_bins", src)
    else:
        n_mels = 128

    pre = {}
    pre_path = path.parent / "preprocessor_config.json"
    if pre_path.is_file():
        pre = _load_json(pre_path)
    section = audio_section or {}
    enc_args = section.get("audio_encoding_config") or {}
    sampling_rate = pre.get("sampling_rate", section.get("sampling_rate", 16000))
    frame_rate = section.get("frame_rate")
    if frame_rate is None:
        per_token = _as_int(c.get("audio_length_per_tok", 8), "audio_length_per_tok", src)
        hop = _as_int(pre.get("hop_length", 160), "preprocessor_config.json hop_length", src)
        if per_token <= 0 or hop <= 0:
            raise ConfigError(f"{src}: audio_length_per_tok and hop_length must be positive")
        frame_rate = _as_float(sampling_rate, "sampling_rate", src) / (per_token * hop)
    audio = AudioConfig(
        sampling_rate=_as_int(sampling_rate, "sampling_rate", src),
        frame_rate=_as_float(frame_rate, "frame_rate", src),
        num_mel_bins=_as_int(pre.get("feature_size", enc_args.get("num_mel_bins", n_mels)), "num_mel_bins", src),
        hop_length=_as_int(pre.get("hop_length", enc_args.get("hop_length", 160)), "hop_length", src),
        window_size=_as_int(pre.get("win_length", enc_args.get("window_size", 400)), "window_size", src),
        global_log_mel_max=_as_float(pre.get("global_log_mel_max", 1.5), "global_log_mel_max", src),
        downsample_factor=_as_int(c.get("downsample_factor", 4), "downsample_factor", src),
    )
    if audio.num_mel_bins != n_mels:
        raise ConfigError(f"{src}: num_mel_bins {n_mels} disagrees with the audio front end ({audio.num_mel_bins})")
    cfg = ModelConfig(encoder=enc, decoder=dec, audio=audio, rope_style="half", source=src)
    cfg.validate()
    return cfg
