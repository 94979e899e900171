"""``python -m voxtral serve``: a realtime transcription server on the CPU.

- ``/v1/realtime``: vLLM's realtime WebSocket protocol for this model;
- ``POST /v1/audio/transcriptions``: OpenAI-compatible file transcription;
- ``/health``, ``/v1/models``, ``/metrics``.

Live sessions share one model: ``voxtral.batch.BatchEngine`` steps them
together. Needs the ``serve`` extra (fastapi, uvicorn, python-multipart).
"""
