"""Stand-in for vllm.assets.audio: the tests always give the client --audio_path."""


class AudioAsset:
    def __init__(self, name):
        raise RuntimeError("no vLLM audio assets here: pass --audio_path")
