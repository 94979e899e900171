"""Drive the reference implementation (transformers' VoxtralRealtime +
mistral-common) on a generated Hugging Face checkpoint; everything returned as
numpy arrays. A helper for the tests, not a test module.

Offline inputs are built the way ``VoxtralRealtimeProcessor`` builds them,
from mistral-common's own primitives (``AudioEncoder.pad``,
``encode_streaming_tokens``, ``get_num_delay_tokens``) for any delay, and
cross-checked against the manual recipe of model.md (left 32 x 1280 zero
samples; right pad to a multiple of 1280 plus (n_delay + 1 + 10) x 1280;
prompt [BOS] + [STREAMING_PAD] x (32 + n_delay)). The audio is used exactly as
given: the processor itself round-trips it through a 16-bit WAV (soundfile),
which is exact for 16-bit recordings only; :func:`processor_inputs` runs that
path for comparison when soundfile is installed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

SAMPLE_RATE = 16000
SAMPLES_PER_TOKEN = 1280  # 16000 / 12.5
N_LEFT_PAD_TOKENS = 32
OFFLINE_BUFFER_TOKENS = 10  # mistral-common's OFFLINE_STREAMING_BUFFER_TOKENS
BOS, STREAMING_PAD = 1, 32

torch.set_num_threads(2)

_MODEL_CACHE: dict[str, Any] = {}  # one model at a time (full width fp32 is ~6 GB)
_TOKENIZERS: dict[str, Any] = {}
_FEATURE_EXTRACTOR = None


def _key(path: str | os.PathLike) -> str:
    p = Path(path).resolve()
    return f"{p}:{max((f.stat().st_mtime_ns for f in p.glob('*.safetensors')), default=0)}"


def load_reference(hf_dir: str | os.PathLike):
    """transformers' VoxtralRealtimeForConditionalGeneration in float32, eval
    mode (the last one loaded is cached)."""
    from transformers import VoxtralRealtimeForConditionalGeneration

    torch.set_num_threads(2)
    key = _key(hf_dir)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    _MODEL_CACHE.clear()
    model, info = VoxtralRealtimeForConditionalGeneration.from_pretrained(
        str(hf_dir), dtype=torch.float32, output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v and k != "error_msgs"} or info.get("error_msgs")
    if bad:
        raise AssertionError(f"reference did not load {hf_dir} cleanly: {bad}")
    model.eval()
    _MODEL_CACHE[key] = model
    return model


def load_tokenizer(hf_dir: str | os.PathLike):
    """transformers' MistralCommonBackend on the directory's tekken.json."""
    from transformers import MistralCommonBackend

    key = str(Path(hf_dir).resolve())
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = MistralCommonBackend.from_pretrained(key)
    return _TOKENIZERS[key]


def feature_extractor():
    global _FEATURE_EXTRACTOR
    if _FEATURE_EXTRACTOR is None:
        from transformers import VoxtralRealtimeFeatureExtractor

        _FEATURE_EXTRACTOR = VoxtralRealtimeFeatureExtractor()
    return _FEATURE_EXTRACTOR


def reference_log_mel(audio_16k: np.ndarray, center: bool = True) -> np.ndarray:
    """VoxtralRealtimeFeatureExtractor's log-mel of the audio as given,
    [n_mels, frames] float32."""
    audio = np.asarray(audio_16k, dtype=np.float32)
    with torch.no_grad():
        feats = feature_extractor()(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", center=center)
    return feats["input_features"][0].numpy().astype(np.float32)


def num_delay_tokens(delay_ms: int) -> int:
    if delay_ms % 80 or not 80 <= delay_ms <= 2400:
        raise ValueError(f"delay must be 80..2400 ms in steps of 80, got {delay_ms}")
    return delay_ms // 80


def manual_padded_audio(audio_16k: np.ndarray, delay_ms: int = 480) -> np.ndarray:
    """The offline padding of mistral-common, written out (model.md)."""
    audio = np.asarray(audio_16k, dtype=np.float32)
    n = len(audio)
    right = (-n) % SAMPLES_PER_TOKEN + (num_delay_tokens(delay_ms) + 1 + OFFLINE_BUFFER_TOKENS) * SAMPLES_PER_TOKEN
    return np.concatenate(
        [np.zeros(N_LEFT_PAD_TOKENS * SAMPLES_PER_TOKEN, np.float32), audio, np.zeros(right, np.float32)]
    )


def manual_prompt(delay_ms: int = 480) -> list[int]:
    return [BOS] + [STREAMING_PAD] * (N_LEFT_PAD_TOKENS + num_delay_tokens(delay_ms))


def mistral_common_inputs(hf_dir: str | os.PathLike, audio_16k: np.ndarray, delay_ms: int = 480) -> dict:
    """Padded audio, prompt and delay-token count from mistral-common's own
    audio encoder (what the processor / a TranscriptionRequest with
    ``target_streaming_delay_ms`` produce), checked against the manual recipe."""
    tok = load_tokenizer(hf_dir)
    instruct = tok.tokenizer.instruct_tokenizer
    enc = instruct.audio_encoder
    audio = np.asarray(audio_16k, dtype=np.float32)
    n_delay = int(enc.audio_config.get_num_delay_tokens(delay_ms))
    padded = np.asarray(enc.pad(audio, SAMPLE_RATE, delay_ms), dtype=np.float32)
    prompt = list(instruct.start()) + list(enc.encode_streaming_tokens(delay_ms))
    assert n_delay == num_delay_tokens(delay_ms), (n_delay, delay_ms)
    assert prompt == manual_prompt(delay_ms), prompt
    assert np.array_equal(padded, manual_padded_audio(audio, delay_ms)), "mistral-common padding differs from model.md"
    return {"padded_audio": padded, "input_ids": prompt, "num_delay_tokens": n_delay}


def processor_inputs(hf_dir: str | os.PathLike, audio_16k: np.ndarray) -> dict:
    """The processor's own offline inputs at the tokenizer's default delay
    (480 ms); needs soundfile (mistral-common serialises the audio as WAV)."""
    from transformers import VoxtralRealtimeProcessor

    proc = VoxtralRealtimeProcessor(feature_extractor=feature_extractor(), tokenizer=load_tokenizer(hf_dir))
    out = proc(np.asarray(audio_16k, dtype=np.float32), return_tensors="pt")
    return {
        "input_ids": out["input_ids"][0].tolist(),
        "input_features": out["input_features"][0].numpy().astype(np.float32),
        "num_delay_tokens": int(out["num_delay_tokens"]),
    }


def _model_and_dir(hf_dir_or_model):
    if isinstance(hf_dir_or_model, (str, os.PathLike)):
        return load_reference(hf_dir_or_model), Path(hf_dir_or_model)
    model = hf_dir_or_model
    return model, Path(model.config._name_or_path)


def reference_audio_features(model, input_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(encoder_out [frames, enc_dim], audio_embeds [positions, dim]) of the
    whole log-mel [n_mels, F] in one pass."""
    feats = torch.from_numpy(np.ascontiguousarray(input_features, dtype=np.float32))[None]
    with torch.no_grad():
        out = model.model.get_audio_features(input_features=feats, use_cache=False, return_dict=True)
    return (
        out.last_hidden_state[0].float().numpy().copy(),
        out.pooler_output[0].float().numpy().copy(),
    )


def reference_offline(hf_dir_or_model, audio_16k: np.ndarray, delay_ms: int = 480) -> dict:
    """Greedy offline transcription by the reference.

    Returns ``input_ids`` (the prompt, list), ``input_features`` (padded
    log-mel [n_mels, F]), ``num_delay_tokens``, ``tokens`` (generated ids after
    the prompt, EOS included if produced), ``step_logits`` ([n_steps, vocab]
    float32, one row per generated token), ``encoder_out`` ([F/2, enc_dim]),
    ``audio_embeds`` ([F/8, dim]) and ``padded_audio``.
    """
    torch.set_num_threads(2)
    model, hf_dir = _model_and_dir(hf_dir_or_model)
    inp = mistral_common_inputs(hf_dir, audio_16k, delay_ms)
    feats = reference_log_mel(inp["padded_audio"])
    prompt = torch.tensor([inp["input_ids"]], dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_length.*")
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            input_features=torch.from_numpy(feats)[None],
            num_delay_tokens=inp["num_delay_tokens"],
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0, prompt.shape[1] :].tolist()
    step_logits = (
        torch.stack([lg[0] for lg in out.logits]).float().numpy() if out.logits else np.zeros((0, 0), np.float32)
    )
    encoder_out, audio_embeds = reference_audio_features(model, feats)
    return {
        "input_ids": inp["input_ids"],
        "input_features": feats,
        "num_delay_tokens": inp["num_delay_tokens"],
        "tokens": tokens,
        "step_logits": step_logits,
        "encoder_out": encoder_out,
        "audio_embeds": audio_embeds,
        "padded_audio": inp["padded_audio"],
    }


def read_wav_16k(path: str | os.PathLike) -> np.ndarray:
    """A 16 kHz mono 16-bit PCM WAV as float32 in [-1, 1) (x / 32768), with
    the standard library only."""
    import wave

    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != SAMPLE_RATE:
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit PCM")
        raw = w.readframes(w.getnframes())
    return (np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768)).astype(np.float32)
