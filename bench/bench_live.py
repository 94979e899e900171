"""Live speed end to end: the full-size model fed 80 ms chunks of speech at
real time (synthetic clock, no sound card) through the whole stream API.

For each weight format and KV cache type, at a short context (after the
first 15 s, which also fill the encoder's 750-frame window) and at a full
8192-position decoder window (fast-forwarded, see livesim.py), it reports
the per-chunk latency (p50/p95/max, beyond the model's own delay), the
real-time factor (compute / audio time: <= 1.0 keeps up) and where the time
goes (mel, encoder, decoder matmuls, attention, LM head), as extra_info.
Nothing is asserted about time.

The full-size checkpoint is generated once (8.9 GB, see bench_model.py) and
quantized once per format into its cache. Select modes with
VOXTRAL_BENCH_MODES (default "bf16/f32 q8_0/int8 q4_0/int8 q4_k/int8").
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
from bench_model import full_dir  # noqa: F401  (fixture)
from livesim import fast_forward, paced_feed, timed

import voxtral
from conftest import measure_read_bandwidth
from voxtral import _kernels
from voxtral.audio import load_audio
from voxtral.weights import LINEAR_FIELDS

CHUNK_S = 0.08
WARM_S = 15.04  # fills the encoder window (750 frames at 50/s)
MEASURE_S = 6.4  # 80 chunks

# decoder steps verified per pass (VOXTRAL_BENCH_DRAFT_STEPS; 1 = step by step)
DRAFT_STEPS = int(os.environ.get("VOXTRAL_BENCH_DRAFT_STEPS", "8"))
MODES = os.environ.get("VOXTRAL_BENCH_MODES", "bf16/f32 q8_0/int8 q4_0/int8 q4_k/int8").split()


def _speech(audio_dir, seconds: float) -> np.ndarray:
    clips = [load_audio(p) for p in sorted(audio_dir.glob("*.wav"))]
    audio = np.concatenate(clips)
    reps = int(np.ceil(seconds * 16000 / len(audio)))
    return np.concatenate([audio] * reps)[: int(seconds * 16000)]


def _stages(model):
    layers_K = voxtral.layers.K
    return [
        (model.encoder, "forward", "encoder"),
        (model.decoder, "forward", "decoder (incl. attention)"),
        (layers_K, "attention", "attention (enc+dec)"),
        (layers_K, "attention_kv", "attention (enc+dec)"),
        (model.decoder, "logits", "lm_head"),
    ]


def _chunk_weight_bytes(model) -> int:
    """The weights a live chunk reads at least once: a decoder step (its
    layers and the LM head) and an encoder push (its layers)."""
    w = model.weights
    layers = [*w.decoder_layers, *w.encoder_layers]
    return int(sum(getattr(lw, n).nbytes for lw in layers for n in LINEAR_FIELDS) + w.tok_embeddings.nbytes)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("context", ["short", "full_window"])
def test_live_stream(benchmark, full_dir, audio_dir, mode, context):  # noqa: F811
    weights, kv = mode.split("/")
    model = voxtral.load(full_dir, quant=None if weights == "bf16" else weights, kv_cache=kv)
    rate = model.sample_rate
    audio = _speech(audio_dir, WARM_S + MEASURE_S)
    warm, live = audio[: int(WARM_S * rate)], audio[int(WARM_S * rate) :]
    stream = model.stream(480, draft_steps=DRAFT_STEPS)
    stream.feed(warm)  # prompt + 15 s of context, at offline speed
    if context == "full_window":
        fast_forward(stream, model.config.decoder.sliding_window - 1)
    context_rows = stream.memory["decoder_cache"].length
    chunk = int(CHUNK_S * rate)
    stream.feed(live[:chunk])  # one untimed chunk: page faults, first-call allocations
    passes0, tokens0 = stream.passes, len(stream.tokens)
    # the machine's read bandwidth moves (shared hosts): read just before and
    # after, so the floor below is the one of this run
    bw_before = measure_read_bandwidth(512 * 1024 * 1024, repeats=5)
    with timed(_stages(model)) as stages:
        run = paced_feed(stream, live[chunk:], chunk, rate)
    bw_after = measure_read_bandwidth(512 * 1024 * 1024, repeats=5)
    passes, steps = stream.passes - passes0, len(stream.tokens) - tokens0
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    total = float(np.sum(run.compute))
    floors = [_chunk_weight_bytes(model) / bw for bw in (bw_before, bw_after)]
    benchmark.extra_info.update(
        isa=_kernels.active_isa(),
        threads=_kernels.get_num_threads(),
        weights=weights,
        kv_cache=kv,
        context_positions=int(context_rows),
        chunks=run.chunks,
        rtf=round(run.rtf, 3),
        draft_steps=DRAFT_STEPS,
        decoder_passes=passes,
        steps_per_pass=round(steps / max(1, passes), 2),
        **{k: round(v, 1) for k, v in run.percentiles().items()},
        ms_per_chunk={name: round(1000 * s / run.chunks, 1) for name, s in stages.seconds.items()},
        ms_per_chunk_total=round(1000 * total / run.chunks, 1),
        read_gb_s_before=round(bw_before / 1e9, 1),
        read_gb_s_after=round(bw_after / 1e9, 1),
        # a chunk's weight bytes over each reading: the floor of a chunk at
        # K = 1 (drafted passes can go below it); a reading can catch a
        # moment of the host's, so both are given
        floor_ms_per_chunk=[round(1000 * f, 1) for f in floors],
        over_floor=[round(total / run.chunks / f, 2) for f in floors],
    )
    del stream, model
    gc.collect()
