"""vLLM's realtime protocol with server VAD, an opt-in:
``/v1/realtime?turn_detection=server_vad``.

The client only appends audio (base64 PCM16 mono at the server's rate, as
in the plain protocol); the voice activity detector starts a transcription
at each speech start (``prefix_padding_ms`` before it included) and ends it
after ``silence_duration_ms`` of silence, so the client gets one
``transcription.delta``... ``transcription.done`` sequence per turn of speech
and silence is never decoded. ``session.update`` may carry ``turn_detection``
{threshold, prefix_padding_ms, silence_duration_ms} (OpenAI's fields) next to
``model`` and ``transcription_delay_ms``; ``input_audio_buffer.commit``
{final: true} ends the turn in progress at once, other commits are not
needed. The speech events of OpenAI's protocol
(``input_audio_buffer.speech_started`` / ``speech_stopped``) are sent too.
"""

from __future__ import annotations

import json

from ..errors import VoxtralError
from . import protocol
from .openai_realtime import ClientError, Config, OpenAIRealtimeConnection


class VllmVadConnection(OpenAIRealtimeConnection):
    def __init__(self, ws, manager, cfg, model):
        super().__init__(ws, manager, cfg, model)
        self.config = Config(format="audio/pcm", rate=model.sample_rate)  # server_vad by default
        self._set_audio()

    def _send(self, event: dict) -> None:
        self.out.put_nowait(event)  # vLLM's events carry no event_id

    def _error(self, message: str, code: str, param=None, event_id=None, kind="") -> None:
        self.manager.metrics.error(code)
        self._send(protocol.error(message, code))

    def _session_event(self, kind: str) -> None:
        if kind == "session.created":  # vLLM has no session.updated
            self._send(protocol.session_created())

    def _announce_commit(self, item) -> None:
        pass  # vLLM clients learn of a turn from its deltas and transcription.done

    async def _handle(self, event: dict) -> None:
        if event.get("type") == "session.update" and "turn_detection" in event:
            turn = event.pop("turn_detection")
            if isinstance(turn, dict):
                turn = {"type": "server_vad", **turn}
            self._update({"type": "transcription", "audio": {"input": {"turn_detection": turn}}}, beta=False)
        try:
            event = protocol.parse(json.dumps(event))
        except protocol.ProtocolError as exc:
            raise ClientError(str(exc), exc.code) from None
        kind = event["type"]
        if kind == "session.update":
            name = event.get("model")
            if name is not None and name not in self.cfg.model_names:
                raise ClientError(f"The model `{name}` does not exist.", protocol.MODEL_NOT_FOUND)
            delay = event.get("transcription_delay_ms")
            if delay is not None:
                try:
                    self.model.config.delay_tokens(delay)
                except VoxtralError as exc:
                    raise ClientError(str(exc), protocol.INVALID_EVENT) from None
                self.config.delay_ms = delay  # from the next turn on
        elif kind == "input_audio_buffer.append":
            await self._append(event["audio"])
        elif event.get("final") and self.item is not None:
            self._commit(manual=True)

    def _translate(self, item, event: dict) -> tuple[list[dict], bool]:
        kind = event["type"]
        if kind == "transcription.done":
            return [event], True
        if kind == "error":
            return [event], event["code"] != protocol.SERVER_OVERLOADED
        return [event], False  # deltas ('' for control tokens, as vLLM sends them) and lag reports
