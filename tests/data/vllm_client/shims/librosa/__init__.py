"""Stand-in for librosa.load (WAV only) so vLLM's example client runs without librosa."""

from voxtral.audio import load_audio


def load(path, sr=16000, mono=True):
    if not mono:
        raise NotImplementedError("this stand-in only downmixes to mono")
    return load_audio(path, target_rate=sr), sr
