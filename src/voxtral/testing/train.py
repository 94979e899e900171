"""Train a small Voxtral Realtime (the real architecture, through transformers'
``VoxtralRealtimeForConditionalGeneration``) on synthetic speech, so that every
mode of this package can be given a word error rate.

Targets follow the streaming decode schedule exactly (``shared/docs/model.md``):
the sequence is ``[BOS] + [STREAMING_PAD] * (32 + n_delay)`` (the prompt, not
scored), then one token per 80 ms audio slot: the token at sequence index
``L + s`` (L = prompt length) describes audio slot ``s`` (this package's
``TokenEvent.start``), so a word's tokens start at the slot in which the word
starts (later only if the previous word's tokens still occupy it) and every
other slot is ``[STREAMING_PAD]``. The audio is left-padded with 32 silent
slots and right-padded like the offline schedule (to a multiple of 1280
samples plus ``n_delay + 11`` slots). Each batch draws one delay from
``--delays``; the ada-norm conditioning receives it.

Utterances are drawn from a word bank (``voxtral.testing.speech``) with random
gaps, speed/pitch change by resampling (x0.9-1.1), gain and noise.

Command line (prints what it reached on stdout)::

    python -m voxtral.testing.train --bank bank.npz --heldout DIR --out OUT \\
        [--steps N] [--minutes M] [--seed S] [--device cuda]

OUT receives ``model-*.safetensors`` (the trained tensors, Hugging Face
in-memory names, BF16, split into pieces under 12 MB) and ``train.json``;
``python -m voxtral.testing.train export OUT DIR`` writes the real checkpoint
files (Mistral-native layout, or both layouts) from them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# The trained model's dimensions: every linear matrix's row length is a
# multiple of 256 (Q4_K super-blocks), the vocabulary is the real Tekken
# vocabulary's first 31768 base tokens (+ 1000 control tokens), so the tied
# embedding stays 16 MB in BF16.
TRAINED_DIMS: dict[str, Any] = {
    "dim": 256,
    "n_layers": 4,
    "head_dim": 64,
    "hidden_dim": 768,
    "n_heads": 4,
    "n_kv_heads": 2,
    "vocab_size": 32768,
    "enc_dim": 256,
    "enc_n_layers": 4,
    "enc_head_dim": 64,
    "enc_hidden_dim": 768,
    "enc_n_heads": 4,
    "max_shard_bytes": 1 << 30,
}

BOS, EOS, PAD = 1, 2, 32
SAMPLES_PER_SLOT = 1280
LEFT_PAD_SLOTS = 32
RIGHT_PAD_EXTRA = 11  # offline right pad: n_delay + 1 + 10 slots
_PIECE_BYTES = 12 << 20  # result files must stay under the transfer limit


def trained_dims() -> dict[str, Any]:
    from .checkpoint import resolve_dims

    return resolve_dims("tiny", **TRAINED_DIMS)


def tekken_word_tokens(vocab_size: int) -> Callable[[str], list[int] | None]:
    """word -> the Tekken token ids of `` word`` under the vocabulary truncated to ``vocab_size``."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    from .checkpoint import build_tekken

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tekken.json"
        path.write_text(json.dumps(build_tekken(vocab_size)), encoding="utf-8")
        tk = Tekkenizer.from_file(path)

    def tokens(word: str) -> list[int] | None:
        ids = tk.encode(" " + word, bos=False, eos=False)
        ok = ids and len(ids) <= 3 and all(1000 <= i < vocab_size for i in ids)
        return list(ids) if ok else None

    return tokens


# ---------------------------------------------------------------------------
# Targets


def layout_targets(starts: list[float], word_tokens: list[list[int]], n_slots: int) -> np.ndarray:
    """Tokens per audio slot: a word's tokens from the slot where it starts
    (or the first free one), ``[STREAMING_PAD]`` elsewhere."""
    out = np.full(n_slots, PAD, dtype=np.int64)
    free = 0
    sec_per_slot = SAMPLES_PER_SLOT / 16000
    for start, toks in zip(starts, word_tokens, strict=True):
        s = max(math.floor(start / sec_per_slot + 1e-9), free)
        for t in toks:
            if s < n_slots:
                out[s] = t
            s += 1
        free = s
    return out


def sequence(
    audio: np.ndarray, starts: list[float], word_tokens: list[list[int]], n_delay: int, min_slots: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(padded audio, input ids, labels) of one utterance at ``n_delay``."""
    a_slots = -(-audio.shape[0] // SAMPLES_PER_SLOT)
    total = max(LEFT_PAD_SLOTS + a_slots + n_delay + RIGHT_PAD_EXTRA, min_slots)
    padded = np.zeros(total * SAMPLES_PER_SLOT, dtype=np.float32)
    padded[LEFT_PAD_SLOTS * SAMPLES_PER_SLOT : LEFT_PAD_SLOTS * SAMPLES_PER_SLOT + audio.shape[0]] = audio
    L = 1 + LEFT_PAD_SLOTS + n_delay
    ids = np.full(total, PAD, dtype=np.int64)
    ids[0] = BOS
    ids[L:] = layout_targets(starts, word_tokens, total - L)
    labels = ids.copy()
    labels[:L] = -100
    return padded, ids, labels


# ---------------------------------------------------------------------------
# Data


class Bank:
    def __init__(self, path: Path):
        import soundfile as sf

        z = np.load(path / "bank.npz")
        if (path / "bank.npy").exists():  # raw int16, shared between the data workers' pages
            self.audio = np.load(path / "bank.npy", mmap_mode="r")
        else:
            self.audio = sf.read(path / "bank.ogg", dtype="int16")[0]
        if self.audio.shape[0] != int(z["samples"]):
            raise ValueError(f"{path}: {self.audio.shape[0]} samples of audio, expected {int(z['samples'])}")
        self.pieces = json.loads(str(z["pieces"]))
        self.offsets = z["offsets"]
        self.words = [str(w) for w in z["words"]]
        self.sentences = [str(s).split() for s in z["sentences"]]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.tokens = json.loads(str(z["word_tokens"]))

    def clip(self, voice: int, word: str) -> np.ndarray:
        i = self.index[word]
        a, b = self.offsets[voice, i], self.offsets[voice, i + 1]
        return self.audio[a:b].astype(np.float32) / 32768.0


def draw_utterance(bank: Bank, rng: np.random.Generator) -> tuple[np.ndarray, list[float], list[list[int]]]:
    from .speech import assemble

    if rng.random() < 0.7:
        words = bank.sentences[rng.integers(len(bank.sentences))]
    else:
        words = [bank.words[i] for i in rng.integers(len(bank.words), size=rng.integers(3, 13))]
    voice = int(rng.integers(bank.offsets.shape[0]))
    audio, starts, _ = assemble(
        [bank.clip(voice, w) for w in words], rng, lead=(0.0, 1.0), gap=(0.03, 0.3), tail=float(rng.uniform(0.0, 0.5))
    )
    rate = rng.uniform(0.9, 1.1)  # resampling changes speed and pitch together
    n = int(audio.shape[0] / rate)
    audio = np.interp(np.arange(n) * rate, np.arange(audio.shape[0]), audio).astype(np.float32)
    starts = [s / rate for s in starts]
    audio *= rng.uniform(0.3, 1.0)
    if rng.random() < 0.5:
        audio += rng.standard_normal(audio.shape[0], dtype=np.float32) * np.float32(10 ** rng.uniform(-4, -2.3))
    return audio, starts, [bank.tokens[w] for w in words]


def make_batch(bank: Bank, rng: np.random.Generator, batch: int, n_delay: int):
    utts = [draw_utterance(bank, rng) for _ in range(batch)]
    seqs = [sequence(a, s, t, n_delay) for a, s, t in utts]
    slots = max(ids.shape[0] for _, ids, _ in seqs)
    seqs = [sequence(a, s, t, n_delay, slots) for a, s, t in utts]
    return (np.stack([s[0] for s in seqs]), np.stack([s[1] for s in seqs]), np.stack([s[2] for s in seqs]))


def batches(bank_path: Path, seed: int, batch: int, delays: list[int]):
    """An iterable dataset of training batches: worker w draws from seed
    (seed, w); each batch has one delay, drawn from ``delays``."""
    import torch

    class Batches(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            bank = Bank(bank_path)
            rng = np.random.default_rng([seed, info.id if info else 0])
            while True:
                n_delay = int(rng.choice(delays))
                audio, ids, labels = make_batch(bank, rng, batch, n_delay)
                yield torch.from_numpy(audio), torch.from_numpy(ids), torch.from_numpy(labels), n_delay

    return Batches()


def log_mel(audio, mel_filters, n_fft: int = 400, hop: int = 160, log_mel_max: float = 1.5):
    """The model's front end in torch (as transformers' feature extractor, batched, on any device)."""
    import torch

    window = torch.hann_window(n_fft, device=audio.device)
    stft = torch.stft(audio, n_fft, hop, window=window, return_complex=True, center=True)
    mag = stft[..., :-1].abs() ** 2
    mel = torch.clamp(mel_filters.T @ mag, min=1e-10).log10()
    mel = torch.maximum(mel, torch.tensor(log_mel_max - 8.0, device=audio.device))
    return (mel + 4.0) / 4.0


# ---------------------------------------------------------------------------
# Model


def build_model(dims: dict[str, Any], seed: int):
    import torch
    from transformers import VoxtralRealtimeConfig, VoxtralRealtimeForConditionalGeneration

    from .checkpoint import hf_config_json

    cfg = hf_config_json(dims)
    cfg.pop("architectures")
    cfg.pop("model_type")
    cfg.pop("dtype")
    torch.manual_seed(seed)
    config = VoxtralRealtimeConfig(**cfg)
    return VoxtralRealtimeForConditionalGeneration(config)


def greedy_decode(model, mel, n_delay: int, n_slots: list[int]) -> list[list[int]]:
    """Offline greedy decoding in torch (prefill the prompt, then one token per
    slot, KV-cached); returns each utterance's tokens after the prompt."""
    import torch
    from transformers import DynamicCache

    with torch.no_grad():
        m = model.model
        audio_emb = m.get_audio_features(input_features=mel).pooler_output  # [B, T, D]
        B, T, _ = audio_emb.shape
        L = 1 + LEFT_PAD_SLOTS + n_delay
        prompt = torch.full((B, L), PAD, dtype=torch.long, device=mel.device)
        prompt[:, 0] = BOS
        emb = m.get_input_embeddings()
        t_cond = m.time_embedding(torch.full((1,), n_delay, device=mel.device, dtype=audio_emb.dtype))[None]
        cache = DynamicCache(config=m.config.text_config)
        x = emb(prompt) + audio_emb[:, :L]
        out = []
        pos = 0
        for step in range(L, T + 1):
            h = m.language_model(
                inputs_embeds=x,
                past_key_values=cache,
                use_cache=True,
                t_cond=t_cond,
                position_ids=torch.arange(pos, pos + x.shape[1], device=mel.device)[None],
            )
            pos += x.shape[1]
            tok = model.lm_head(h.last_hidden_state[:, -1]).argmax(-1)
            out.append(tok)
            if step == T:
                break
            x = emb(tok[:, None]) + audio_emb[:, step : step + 1]
        toks = torch.stack(out, 1).cpu().numpy()
    return [list(toks[b, : n_slots[b]]) for b in range(B)]


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)]


def evaluate(model, heldout: Path, fe_filters, id_to_piece, delays: list[int], device: str) -> dict[int, float]:
    """WER (%) of offline greedy decoding on the held-out set, per delay."""
    import soundfile as sf
    import torch

    manifest = json.loads((heldout / "manifest.json").read_text())
    audios = [sf.read(heldout / m["file"], dtype="float32")[0] for m in manifest]
    result = {}
    for n_delay in delays:
        seqs = [sequence(a, [], [], n_delay) for a in audios]
        slots = max(s[1].shape[0] for s in seqs)
        n_out = [s[1].shape[0] - (1 + LEFT_PAD_SLOTS + n_delay) for s in seqs]
        padded = np.stack([sequence(a, [], [], n_delay, slots)[0] for a in audios])
        mel = log_mel(torch.from_numpy(padded).to(device), fe_filters)
        toks = greedy_decode(model, mel, n_delay, n_out)
        errs = words = 0
        for m, t in zip(manifest, toks, strict=True):
            hyp = "".join(id_to_piece(int(i)) for i in t if i >= 1000).split()
            errs += word_errors(m["words"], hyp)
            words += len(m["words"])
        result[n_delay] = 100.0 * errs / words
    return result


def weighted_loss(logits, labels, word_weight: float):
    """Next-token cross entropy (the sequence shifted as transformers' causal LM
    loss does) with text tokens weighted ``word_weight`` against
    ``[STREAMING_PAD]``: most slots are pads, the words are what matters."""
    import torch

    logits, labels = logits[:, :-1], labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
    )
    w = torch.where(labels.reshape(-1) == PAD, 1.0, word_weight) * (labels.reshape(-1) != -100)
    return (ce * w).sum() / w.sum()


def state_from_pieces(src: Path) -> dict:
    """A state dict (float32 tensors) from ``save_pieces`` files."""
    import torch

    return {k: torch.from_numpy((v.astype(np.uint32) << 16).view(np.float32)) for k, v in load_pieces(src).items()}


# ---------------------------------------------------------------------------
# Saving


def save_pieces(model, out: Path) -> list[Path]:
    """The state dict in BF16, tensors split by rows into files under 12 MB."""
    import torch
    from safetensors.torch import save_file

    state = {
        k: v.detach().to(torch.bfloat16).cpu().contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"
    }
    pieces: list[dict[str, Any]] = [{}]
    size = 0
    for name, t in state.items():
        rows = max(1, _PIECE_BYTES // max(1, t[0].numel() * 2)) if t.dim() else 1
        parts = torch.split(t, rows) if t.dim() and t.numel() * 2 > _PIECE_BYTES else [t]
        for k, p in enumerate(parts):
            key = name if len(parts) == 1 else f"{name}#{k}"
            if size and size + p.numel() * 2 > _PIECE_BYTES:
                pieces.append({})
                size = 0
            pieces[-1][key] = p.contiguous()
            size += p.numel() * 2
    paths = []
    for i, piece in enumerate(pieces):
        paths.append(out / f"model-{i:02d}.safetensors")
        save_file(piece, paths[-1])
    return paths


def load_pieces(src: Path) -> dict[str, np.ndarray]:
    """HF in-memory name -> BF16 bit patterns (uint16), pieces joined."""
    import re

    parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    for path in sorted(src.glob("model-*.safetensors")):
        for key, arr in _load_bf16_bits(path).items():
            m = re.fullmatch(r"(.*)#(\d+)", key)
            name, k = (m.group(1), int(m.group(2))) if m else (key, 0)
            parts.setdefault(name, []).append((k, arr))
    return {n: np.concatenate([a for _, a in sorted(p, key=lambda x: x[0])]) for n, p in parts.items()}


def _load_bf16_bits(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] != "BF16":
            raise ValueError(f"{path}: {key} is {info['dtype']}, expected BF16")
        a, b = info["data_offsets"]
        out[key] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=np.uint16).reshape(info["shape"])
    return out


def export_checkpoint(src: Path, out: Path, layout: str = "native") -> dict[str, Path]:
    """Real checkpoint files (native, hf or both) from the trained pieces."""
    hf_tensors = load_pieces(src)
    return write_checkpoint(native_from_hf(hf_tensors, trained_dims()), out, layout)


def native_from_hf(hf_tensors: dict[str, np.ndarray], dims: dict[str, Any]) -> dict[str, np.ndarray]:
    from .checkpoint import native_to_hf_name, tensor_specs, unpermute_from_rotate_half

    out = {}
    for spec in tensor_specs(dims):
        t = hf_tensors[native_to_hf_name(spec.name)]
        if tuple(t.shape) != spec.shape:
            raise ValueError(f"{spec.name}: shape {t.shape}, expected {spec.shape}")
        out[spec.name] = unpermute_from_rotate_half(t, *spec.rope_heads) if spec.rope_heads else t
    return out


def write_checkpoint(
    native: dict[str, np.ndarray], out: Path, layout: str = "native", dims: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write BF16 native tensors (uint16 bit patterns) as a checkpoint in the
    real file formats, through the writers of ``voxtral.testing.checkpoint``."""
    from .checkpoint import (
        _audio_section,
        build_tekken,
        hf_config_json,
        native_to_hf_name,
        params_json,
        permute_for_rotate_half,
        preprocessor_config_json,
        tensor_specs,
    )
    from .safetensors_writer import SafetensorsWriter, TensorSpec

    d = dims or trained_dims()
    specs = tensor_specs(d)
    dirs = {"native": out / "native", "hf": out / "hf"} if layout == "both" else {layout: out}
    tekken = build_tekken(d["vocab_size"], _audio_section(d))
    for kind, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        if kind == "native":
            w = SafetensorsWriter(
                path / "consolidated.safetensors",
                [TensorSpec(s.name, "BF16", s.shape) for s in specs],
                {"format": "pt"},
            )
            for s in specs:
                w.write(s.name, native[s.name])
            w.close()
            (path / "params.json").write_text(json.dumps(params_json(d), indent=2) + "\n")
        else:
            name = "model-00001-of-00001.safetensors"
            w = SafetensorsWriter(
                path / name, [TensorSpec(native_to_hf_name(s.name), "BF16", s.shape) for s in specs], {"format": "pt"}
            )
            for s in specs:
                t = native[s.name]
                w.write(native_to_hf_name(s.name), permute_for_rotate_half(t, *s.rope_heads) if s.rope_heads else t)
            w.close()
            index = {
                "metadata": {"total_size": sum(s.numel * 2 for s in specs)},
                "weight_map": {native_to_hf_name(s.name): name for s in specs},
            }
            (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
            (path / "config.json").write_text(json.dumps(hf_config_json(d), indent=2) + "\n")
            (path / "preprocessor_config.json").write_text(json.dumps(preprocessor_config_json(d), indent=2) + "\n")
        (path / "tekken.json").write_text(json.dumps(tekken, ensure_ascii=False), encoding="utf-8")
    return dirs


# ---------------------------------------------------------------------------
# Training


def train(a: argparse.Namespace) -> int:
    import torch
    from transformers import VoxtralRealtimeFeatureExtractor

    t_start = time.time()
    torch.manual_seed(a.seed)
    dims = trained_dims()
    model = build_model(dims, a.seed)
    if a.init:
        model.load_state_dict(state_from_pieces(a.init), strict=False)
        print(f"initialized from {a.init}", flush=True)
    model = model.to(a.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e6:.1f} M parameters, dims {json.dumps({k: dims[k] for k in TRAINED_DIMS})}", flush=True
    )
    fe = VoxtralRealtimeFeatureExtractor()
    filters = torch.from_numpy(fe.mel_filters).to(a.device, torch.float32)
    bank = Bank(a.bank)
    id_to_piece = _piece_decoder(bank.pieces)
    delays = [int(x) for x in a.delays.split(",")]
    loader = torch.utils.data.DataLoader(
        batches(a.bank, a.seed, a.batch, delays),
        batch_size=None,
        num_workers=a.workers,
        prefetch_factor=4 if a.workers else None,
        persistent_workers=bool(a.workers),
    )
    del bank
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = 300
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / a.steps))))
    )
    timed_from = 300  # with --minutes, the step count is fixed from the speed of steps 300..400
    model.train()
    it = iter(loader)
    losses: list[float] = []
    step = 0
    t0 = time.time()
    deadline = t0 + a.minutes * 60 if a.minutes else None
    t_timed = t0
    while step < a.steps:
        audio, ids, labels, n_delay = next(it)
        audio, ids, labels = audio.to(a.device), ids.to(a.device), labels.to(a.device)
        with torch.no_grad():
            mel = log_mel(audio, filters)
        with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16):
            logits = model(input_ids=ids, input_features=mel, num_delay_tokens=int(n_delay)).logits
        loss = weighted_loss(logits.float(), labels, a.word_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 100 == 0 or step == a.steps:
            print(
                f"step {step} loss {np.mean(losses[-100:]):.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
        if step == timed_from:
            t_timed = time.time()
        if a.minutes and step == timed_from + 100:
            per_step = (time.time() - t_timed) / 100
            planned = int((a.minutes * 60 - (time.time() - t0)) / per_step) + step
            a.steps = min(a.steps, planned)
            print(
                f"{per_step * 1000:.1f} ms/step: {a.steps} steps (rerun with --steps {a.steps} to reproduce)",
                flush=True,
            )
        if deadline and time.time() > deadline + 30:
            print(f"time limit reached at step {step}", flush=True)
            break
    model.eval()
    train_s = time.time() - t0
    wer = evaluate(model, a.heldout, filters, id_to_piece, [3, 6, 12], a.device) if a.heldout else {}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_pieces(model, out)
    report = {
        "steps": step,
        "final_loss": float(np.mean(losses[-100:])),
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "batch": a.batch,
        "lr": a.lr,
        "seed": a.seed,
        "word_weight": a.word_weight,
        "init": str(a.init) if a.init else None,
        "delays": delays,
        "heldout_wer_offline_torch": {f"{d * 80}ms": round(w, 2) for d, w in wer.items()},
        "parameters": n_params,
        "device": a.device,
    }
    (out / "train.json").write_text(json.dumps(report, indent=2) + "\n")
    print("reached: " + json.dumps(report), flush=True)
    return 0


def _piece_decoder(pieces: list[str]) -> Callable[[int], str]:
    import base64

    return lambda i: base64.b64decode(pieces[i - 1000]).decode("utf-8", errors="replace")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        ap = argparse.ArgumentParser(prog="python -m voxtral.testing.train export")
        ap.add_argument("src", type=Path)
        ap.add_argument("out", type=Path)
        ap.add_argument("--layout", choices=["native", "hf", "both"], default="native")
        a = ap.parse_args(argv[1:])
        for k, p in export_checkpoint(a.src, a.out, a.layout).items():
            print(f"{k}: {p}")
        return 0
    ap = argparse.ArgumentParser(prog="python -m voxtral.testing.train", description=__doc__.split("\n")[0])
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--heldout", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--minutes", type=float, default=0.0, help="stop early after this long (0: no limit)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--word-weight", type=float, default=3.0, help="loss weight of text tokens against pads")
    ap.add_argument("--init", type=Path, default=None, help="start from these trained pieces (a previous --out)")
    ap.add_argument("--delays", default="2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", help="delay tokens to train on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--device", default="cuda")
    return train(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
