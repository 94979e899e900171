"""Audio input: audio files and streams of any common format, raw PCM, numpy arrays.

Everything ends up as 1-D float32 mono at 16 kHz: whole (``load_audio``) or
piece by piece (``read_audio_stream``, which also serves stdin). The format
is recognised by its first bytes, the same way for files, bytes and pipes:
WAV is parsed here, FLAC/OGG/MP3/AIFF decoded by libsndfile (``soundfile``),
anything else by ``ffmpeg`` when it is installed.

The WAV reader is written from the RIFF layout rather than with the stdlib
``wave`` module, which rejects IEEE-float and WAVE_FORMAT_EXTENSIBLE files.
Supported: PCM 8 (unsigned), 16, 24, 32-bit integers, IEEE float 32 and 64,
WAVE_FORMAT_EXTENSIBLE with those sub-formats, RF64/BW64, any channel count
(downmixed by averaging), any sample rate (resampled with soxr).

:func:`read_wav_header` reads a header sequentially from a file object (it never
seeks, so it works on pipes) and leaves the object positioned at the first
sample byte; :func:`pcm_bytes_to_float` turns raw PCM bytes into float samples.
All samples become float through :func:`samples_to_float`, and change rate
through :class:`Resampler`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np

from .errors import AudioError, UsageError
from .limits import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

__all__ = [
    "TARGET_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "check_sample_rate",
    "SampleFormat",
    "WavHeader",
    "is_wav_prefix",
    "read_wav_header",
    "pcm_bytes_to_float",
    "decode_wav",
    "Resampler",
    "resample",
    "samples_to_float",
    "sniff_format",
    "read_audio_stream",
    "load_audio",
]

TARGET_SAMPLE_RATE = 16000

# Rates outside these bounds are corrupt headers or mistakes, not audio: a rate
# of 1 Hz made the resampler allocate 16000x the input (and crash).
MAX_CHANNELS = 64
MAX_AUDIO_SECONDS = 24 * 3600  # one offline input; live streams are not bounded


def check_sample_rate(rate, what: str = "sample_rate", error: type = UsageError) -> int:
    """``rate`` as an int if it is a whole number of Hz within
    [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]; else ``error`` naming ``what``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer, float, np.floating)):
        raise error(f"{what} must be a number of Hz, got {rate!r}")
    if not np.isfinite(rate) or float(rate) != int(rate):
        raise error(f"{what} must be a whole number of Hz, got {rate!r}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise error(f"{what} {int(rate)} Hz is outside the supported {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(rate)


WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Sub-format GUIDs of WAVE_FORMAT_EXTENSIBLE are the 16-bit format tag followed
# by this fixed suffix (KSDATAFORMAT_SUBTYPE_*).
_GUID_SUFFIX = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

# A data chunk size of 0 or 0xFFFFFFFF is what programs writing to a pipe put
# in the header (they cannot seek back to fix it): read until end of input.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)

_KNOWN_TAGS = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MP3",
    0x00FF: "AAC",
    0x1610: "AAC",
    0x2000: "AC-3",
}


class AudioWarning(UserWarning):
    """Audio that was used, but not all of it (e.g. a partial frame at the end of raw input)."""


_CONVERT_HINT = "convert it with: ffmpeg -i INPUT -ar 16000 -ac 1 -c:a pcm_s16le out.wav"

PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------
# Sample formats


@dataclass(frozen=True)
class SampleFormat:
    """How one PCM sample is stored: ``kind`` "int" or "float", ``bits`` per
    sample (the container size: 8, 16, 24, 32 for int, 32, 64 for float), and
    the number of interleaved ``channels``. 8-bit integer PCM is unsigned
    (centred at 128), as in WAV; wider integers are signed little-endian."""

    kind: str
    bits: int
    channels: int = 1

    def __post_init__(self) -> None:
        if self.kind == "int":
            ok = self.bits in (8, 16, 24, 32)
        elif self.kind == "float":
            ok = self.bits in (32, 64)
        else:
            ok = False
        if not ok:
            raise AudioError(f"unsupported sample format: {self.kind} {self.bits}-bit")
        if self.channels < 1:
            raise AudioError(f"invalid channel count {self.channels}")

    @property
    def sample_bytes(self) -> int:
        return self.bits // 8

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return self.sample_bytes * self.channels

    @classmethod
    def parse(cls, spec: str, channels: int = 1) -> SampleFormat:
        """Parse a raw PCM format name: ``s16le`` (``s16``), ``s24le``, ``s32le``,
        ``u8``, ``f32le`` (``f32``, ``float32``), ``f64le``; ffmpeg-style
        ``pcm_s16le`` is accepted too. Big-endian formats are not supported."""
        s = spec.strip().lower()
        if s.startswith("pcm_"):
            s = s[4:]
        aliases = {
            "s16": "s16le",
            "int16": "s16le",
            "s16le": "s16le",
            "s24": "s24le",
            "s24le": "s24le",
            "s32": "s32le",
            "int32": "s32le",
            "s32le": "s32le",
            "u8": "u8",
            "uint8": "u8",
            "f32": "f32le",
            "float32": "f32le",
            "f32le": "f32le",
            "float": "f32le",
            "f64": "f64le",
            "float64": "f64le",
            "f64le": "f64le",
            "double": "f64le",
        }
        canon = aliases.get(s)
        if canon is None:
            raise UsageError(f"unknown PCM format {spec!r} (use one of s16le, s24le, s32le, u8, f32le, f64le)")
        kind = "float" if canon[0] == "f" else "int"
        bits = int(canon[1:].rstrip("le"))
        return cls(kind, bits, channels)


# ---------------------------------------------------------------------------
# WAV header


@dataclass(frozen=True)
class WavHeader:
    """What :func:`read_wav_header` found.

    ``format`` is "pcm" (integer samples) or "float"; ``format_tag`` the tag as
    written in the fmt chunk (1, 3 or 0xFFFE for WAVE_FORMAT_EXTENSIBLE);
    ``bits`` the container bits per sample; ``data_offset`` the byte offset of
    the first sample from the start of the file; ``data_size`` the number of
    audio bytes the header declares, or None when it is unknown (a header
    written by a pipe: read until end of input)."""

    format: str
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_size: int | None
    format_tag: int = WAVE_FORMAT_PCM
    block_align: int = 0
    valid_bits: int | None = None
    container: str = "RIFF"

    @property
    def sample_format(self) -> SampleFormat:
        return SampleFormat("float" if self.format == "float" else "int", self.bits, self.channels)

    @property
    def frame_bytes(self) -> int:
        return self.bits // 8 * self.channels

    @property
    def num_frames(self) -> int | None:
        """Number of whole sample frames the header declares (None if unknown)."""
        if self.data_size is None:
            return None
        return self.data_size // self.frame_bytes


def is_wav_prefix(prefix: bytes) -> bool:
    """True if ``prefix`` (at least 12 bytes of a stream) starts a RIFF/RF64 WAVE file."""
    return len(prefix) >= 12 and prefix[:4] in (b"RIFF", b"RF64", b"BW64") and prefix[8:12] == b"WAVE"


def read_exact(f: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads (pipes); fewer only at EOF."""
    if n <= 0:
        return b""
    first = f.read(n)
    if first is None:
        first = b""
    if len(first) == n or not first:
        return bytes(first)
    parts = [first]
    got = len(first)
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _skip(f: BinaryIO, n: int) -> int:
    """Skip ``n`` bytes (seeking if possible); return how many were skipped."""
    if n <= 0:
        return 0
    try:
        if f.seekable():
            pos = f.tell()
            end = f.seek(0, io.SEEK_END)
            target = min(pos + n, end)
            f.seek(target)
            return target - pos
    except (AttributeError, OSError, ValueError):
        pass
    skipped = 0
    while skipped < n:
        chunk = f.read(min(1 << 16, n - skipped))
        if not chunk:
            break
        skipped += len(chunk)
    return skipped


def _parse_fmt(body: bytes, name: str) -> tuple[str, int, int, int, int, int, int | None]:
    """Return (format, format_tag, channels, rate, bits, block_align, valid_bits)."""
    if len(body) < 16:
        raise AudioError(f"{name}: fmt chunk too short ({len(body)} bytes), not a valid WAV file")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body, 0)
    valid_bits = None
    effective = tag
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise AudioError(f"{name}: WAVE_FORMAT_EXTENSIBLE fmt chunk too short ({len(body)} bytes)")
        valid_bits, _mask = struct.unpack_from("<HI", body, 18)
        guid = body[24:40]
        if guid[2:] != _GUID_SUFFIX:
            raise AudioError(f"{name}: unsupported WAVE_FORMAT_EXTENSIBLE sub-format {guid.hex()}; {_CONVERT_HINT}")
        effective = struct.unpack_from("<H", guid, 0)[0]
    if effective == WAVE_FORMAT_PCM:
        fmt = "pcm"
    elif effective == WAVE_FORMAT_IEEE_FLOAT:
        fmt = "float"
    else:
        what = _KNOWN_TAGS.get(effective, "unknown")
        raise AudioError(f"{name}: unsupported WAV encoding (format tag 0x{effective:04X}, {what}); {_CONVERT_HINT}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{name}: WAV header says {channels} channels (supported: 1..{MAX_CHANNELS})")
    check_sample_rate(rate, f"{name}: WAV header's sample rate", AudioError)
    # Samples fill whole bytes; WAVE_FORMAT_EXTENSIBLE may declare fewer valid
    # bits (20 in 24), left-justified in the container.
    if fmt == "pcm" and bits not in (8, 16, 24, 32):
        raise AudioError(f"{name}: unsupported PCM bit depth {bits}; {_CONVERT_HINT}")
    if fmt == "float" and bits not in (32, 64):
        raise AudioError(f"{name}: unsupported float bit depth {bits}; {_CONVERT_HINT}")
    if valid_bits is not None and not 0 <= valid_bits <= bits:
        raise AudioError(f"{name}: WAV header says {valid_bits} valid bits in {bits}-bit samples")
    if block_align != channels * bits // 8:
        raise AudioError(
            f"{name}: WAV header's block align {block_align} does not match {channels} x {bits}-bit samples"
        )
    return fmt, tag, channels, rate, bits, block_align, valid_bits


def _binary_source(source, name: str | None) -> tuple[BinaryIO, str]:
    """A readable binary file object and a display name for bytes or a file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), name or "<bytes>"
    return source, name or str(getattr(source, "name", "<stream>"))


def read_wav_header(source: bytes | bytearray | memoryview | BinaryIO, name: str | None = None) -> WavHeader:
    """Parse a WAV header from bytes or a binary file object.

    Reads sequentially (never seeks backwards), so it works on pipes: on return a
    file object is positioned at the first sample byte. Unknown chunks are
    skipped (with their pad byte when odd-sized). Raises :class:`AudioError` if
    the input is not a RIFF/WAVE (or RF64) file, the fmt or data chunk is missing,
    or the encoding is unsupported. ``name`` is used in error messages.
    """
    f, name = _binary_source(source, name)

    head = read_exact(f, 12)
    if not is_wav_prefix(head):
        if len(head) == 0:
            raise AudioError(f"{name}: empty file, not a WAV file")
        raise AudioError(f"{name}: not a WAV file (no RIFF/WAVE header); {_CONVERT_HINT}")
    container = head[:4].decode("ascii")
    pos = 12
    fmt_info = None
    ds64_data_size: int | None = None

    while True:
        ch = read_exact(f, 8)
        if len(ch) < 8:
            if fmt_info is None:
                raise AudioError(f"{name}: no fmt chunk found, not a valid WAV file")
            raise AudioError(f"{name}: no data chunk found (no audio in this WAV file)")
        cid = ch[:4]
        size = struct.unpack_from("<I", ch, 4)[0]
        pos += 8
        if cid == b"data":
            if fmt_info is None:
                raise AudioError(f"{name}: data chunk comes before the fmt chunk, not a valid WAV file")
            fmt, tag, channels, rate, bits, block_align, valid_bits = fmt_info
            if container != "RIFF" and size == 0xFFFFFFFF and ds64_data_size is not None:
                data_size: int | None = ds64_data_size
            elif size in _UNKNOWN_SIZES:
                data_size = None
            else:
                data_size = size
            return WavHeader(
                format=fmt,
                channels=channels,
                rate=rate,
                bits=bits,
                data_offset=pos,
                data_size=data_size,
                format_tag=tag,
                block_align=block_align,
                valid_bits=valid_bits,
                container=container,
            )
        padded = size + (size & 1)
        if cid in (b"fmt ", b"ds64"):
            body = read_exact(f, padded)
            if len(body) < size:
                raise AudioError(f"{name}: truncated WAV header ({cid.decode('latin-1').strip()} chunk cut short)")
            body = body[:size]
            if cid == b"fmt ":
                fmt_info = _parse_fmt(body, name)
            elif container != "RIFF":
                if len(body) < 16:
                    raise AudioError(f"{name}: RF64 ds64 chunk too short")
                ds64_data_size = struct.unpack_from("<Q", body, 8)[0]
        else:
            if _skip(f, padded) < size:
                if fmt_info is None:
                    raise AudioError(f"{name}: no fmt chunk found, not a valid WAV file")
                raise AudioError(f"{name}: no data chunk found (no audio in this WAV file)")
        pos += padded


# ---------------------------------------------------------------------------
# Sample decoding


def _as_format(fmt: str | SampleFormat | WavHeader, channels: int | None) -> SampleFormat:
    if isinstance(fmt, WavHeader):
        sf = fmt.sample_format
    elif isinstance(fmt, SampleFormat):
        sf = fmt
    elif isinstance(fmt, str):
        sf = SampleFormat.parse(fmt)
    else:
        raise UsageError(f"fmt must be a format name, SampleFormat or WavHeader, not {type(fmt).__name__}")
    if channels is not None and channels != sf.channels:
        sf = SampleFormat(sf.kind, sf.bits, channels)
    return sf


def pcm_bytes_to_float(
    buf: bytes | bytearray | memoryview,
    fmt: str | SampleFormat | WavHeader = "s16le",
    *,
    channels: int | None = None,
    downmix: bool = True,
    name: str = "<pcm>",
) -> np.ndarray:
    """Decode interleaved little-endian PCM bytes to float32.

    ``fmt`` is a format name ("s16le", "s24le", "s32le", "u8", "f32le", "f64le"),
    a :class:`SampleFormat` or a :class:`WavHeader`; ``channels`` overrides its
    channel count. Integers are scaled to [-1, 1) (int16 by 1/32768, 24-bit by
    1/2^23, int32 by 1/2^31, uint8 as (x - 128) / 128); floats are taken as is.
    Returns a 1-D mono array (channels averaged) or, with ``downmix=False``, a
    ``[frames, channels]`` array. ``len(buf)`` must be a whole number of frames
    (streaming callers keep the remainder for the next call); NaN or infinite
    samples raise :class:`AudioError`.
    """
    sf = _as_format(fmt, channels)
    mv = memoryview(buf).cast("B")
    n = len(mv)
    if n % sf.frame_bytes:
        raise AudioError(f"{name}: {n} bytes is not a whole number of {sf.frame_bytes}-byte sample frames")
    if sf.kind == "float":
        raw = np.frombuffer(mv, dtype="<f4" if sf.bits == 32 else "<f8")
    elif sf.bits == 24:
        # Place the 3 bytes in the top of an int32: scaling by 2^-31 then equals 2^-23.
        b = np.frombuffer(mv, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        raw = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
    else:
        raw = np.frombuffer(mv, dtype={8: np.uint8, 16: "<i2", 32: "<i4"}[sf.bits])
    x = samples_to_float(raw.reshape(-1, sf.channels), name, downmix=downmix)
    return x.reshape(-1, 1) if not downmix and x.ndim == 1 else x


# ---------------------------------------------------------------------------
# Whole files


def decode_wav(source: bytes | bytearray | memoryview | BinaryIO, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a whole WAV file (bytes or a binary file object) to
    ``(float32 mono samples, sample rate)``, without resampling."""
    f, name = _binary_source(source, name)
    rate, pieces = _wav_chunks(f, name)
    parts = list(pieces)
    if not parts:
        raise AudioError(f"{name}: no audio samples (empty data chunk)")
    return np.concatenate(parts) if len(parts) > 1 else parts[0], rate


class Resampler:
    """Incremental band-limited resampler (soxr stream, HQ). Whole signals go
    through it too (:func:`resample`), so files, arrays and live audio are
    resampled the same way."""

    def __init__(self, in_rate: int, out_rate: int = TARGET_SAMPLE_RATE):
        in_rate, out_rate = (
            check_sample_rate(in_rate, "input sample rate"),
            check_sample_rate(out_rate, "output sample rate"),
        )
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return x
        y = self._stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)
        return np.ascontiguousarray(y, dtype=np.float32)


def resample(x: np.ndarray, in_rate: int, out_rate: int = TARGET_SAMPLE_RATE, *, name: str = "<audio>") -> np.ndarray:
    """Resample a whole mono float32 signal; returns ``x`` unchanged if the rates match."""
    if x.shape[0] > MAX_AUDIO_SECONDS * in_rate:
        raise AudioError(
            f"{name}: {x.shape[0] / in_rate / 3600:.1f} hours of audio; at most {MAX_AUDIO_SECONDS // 3600} "
            "hours at once (split it, or feed a stream)"
        )
    return Resampler(in_rate, out_rate)(x, last=True)


def samples_to_float(a, name: str = "<array>", *, downmix: bool = True) -> np.ndarray:
    """The one conversion of samples to float32 (files, raw PCM, arrays, stream feeds).

    ``a`` is 1-D ``[samples]`` or 2-D ``[samples, channels]`` (averaged to mono
    unless ``downmix`` is False). int16 is scaled by 1/32768, int32 by 1/2^31,
    int8 by 1/128, uint8 centred at 128; float is taken as is (not clipped),
    NaN or infinite samples are refused. May be empty."""
    a = np.asarray(a)
    if a.ndim == 0 or a.ndim > 2:
        raise AudioError(f"{name}: expected a 1-D [samples] or 2-D [samples, channels] array, got shape {a.shape}")
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise AudioError(f"{name}: audio array has 0 channels (shape {a.shape})")
        if a.shape[1] > 64 and a.shape[0] < a.shape[1]:
            raise AudioError(
                f"{name}: array of shape {a.shape} looks like [channels, samples]; "
                "pass [samples, channels] (transpose it)"
            )
    dt = a.dtype
    if dt == np.int16:
        x = a.astype(np.float32) * np.float32(1.0 / 32768.0)
    elif dt == np.int32:
        x = (a.astype(np.float64) * (1.0 / 2147483648.0)).astype(np.float32)
    elif dt == np.uint8:
        x = (a.astype(np.float32) - np.float32(128.0)) * np.float32(1.0 / 128.0)
    elif dt == np.int8:
        x = a.astype(np.float32) * np.float32(1.0 / 128.0)
    elif dt.kind == "f":
        x = a.astype(np.float32)
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise AudioError(f"{name}: audio contains {bad} NaN or infinite sample(s)")
    else:
        raise AudioError(f"{name}: unsupported array dtype {dt} (use float32/float64, int16, int32, int8 or uint8)")
    if x.ndim == 2 and downmix:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------
# Any input: one detection and validation path for files, bytes and pipes

# Formats libsndfile (``soundfile``) decodes, by their first bytes.
_SOUNDFILE_MAGIC = (
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),  # Vorbis or Opus
    (b"ID3", "MP3"),  # MP3 with an ID3v2 tag
    (b"FORM", "AIFF"),
    (b"caff", "CAF"),
)
# Containers only ffmpeg reads (m4a/mp4/mov, Matroska/WebM, ASF/WMA, AMR...).
_FFMPEG_MAGIC = (
    (4, b"ftyp", "MP4/M4A"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"\x30\x26\xb2\x75", "ASF/WMA"),
    (0, b"#!AMR", "AMR"),
    (0, b".RMF", "RealMedia"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream"),
)
_SEEKING_CONTAINERS = ("MP4/M4A",)  # ffmpeg needs a file it can seek in, not a pipe
_SNIFF_BYTES = 12
_READ_BYTES = 1 << 16  # bytes per read from a pipe or file: ~2 s of s16le at 16 kHz
_FFMPEG_HINT = "install ffmpeg (e.g. apt install ffmpeg) to read it, or convert it to WAV/FLAC"


def _kind(name: str) -> str:
    """How messages call the input: "<stdin>", "<bytes>"... are not files."""
    return "input" if name.startswith("<") else "file"


def sniff_format(head: bytes) -> tuple[str, str]:
    """What the first bytes of an input say it is: ``(decoder, name)`` with
    decoder "wav", "soundfile", "ffmpeg", "text" (looks like text, not audio)
    or "unknown"."""
    if is_wav_prefix(head):
        return "wav", "WAV"
    for magic, name in _SOUNDFILE_MAGIC:
        if head.startswith(magic):
            return "soundfile", name
    # An MPEG audio frame header: 11 sync bits, then a layer that is not 00 (ADTS AAC).
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "soundfile", "MP3"
    for at, magic, name in _FFMPEG_MAGIC:
        if head[at : at + len(magic)] == magic:
            return "ffmpeg", name
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "ffmpeg", "AAC (ADTS)"
    if head and all(32 <= b < 127 or b in b"\t\n\r" for b in head):
        return "text", "text"
    return "unknown", "unknown"


def _ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


_RAW_HINT = "for raw PCM give its format (--raw-format s16le)"


def _ffmpeg_chunks(source: str | BinaryIO, target_rate: int, name: str, what: str, hint: str = ""):
    """Decode anything ffmpeg reads to float32 mono at ``target_rate``, as it
    comes. ``source`` is a path (ffmpeg seeks in it: an m4a's index may be at
    the end) or a binary stream (copied to ffmpeg's stdin)."""
    import subprocess
    import threading

    exe = _ffmpeg()
    if exe is None:
        raise AudioError(f"{name}: {what} audio needs ffmpeg, which is not installed; {_FFMPEG_HINT}")
    path = source if isinstance(source, str) else None
    source_arg = f"file:{path}" if path else "pipe:0"  # file: so that a name is never read as a protocol
    cmd = [
        exe,
        "-hide_banner",
        "-loglevel",
        "error",
        *(["-nostdin"] if path else []),
        "-i",
        source_arg,
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(target_rate),
        "-f",
        "f32le",
        "pipe:1",
    ]
    proc = subprocess.Popen(
        cmd, stdin=None if path else subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def feed():  # copy the stream into ffmpeg; a closed pipe just means ffmpeg stopped
        try:
            while True:
                data = source.read(_READ_BYTES)
                if not data:
                    break
                proc.stdin.write(data)
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    errors: list[bytes] = []
    err_reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    err_reader.start()
    writer = None
    if path is None:
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
    carry = b""
    got = 0
    try:
        while True:
            data = proc.stdout.read(_READ_BYTES)
            if not data:
                break
            buf = carry + data
            usable = len(buf) - len(buf) % 4
            carry = buf[usable:]
            if usable:
                x = samples_to_float(np.frombuffer(buf[:usable], "<f4"), name)
                got += x.shape[0]
                yield x
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if writer is not None:
            writer.join(timeout=5)
        err_reader.join(timeout=5)
    if proc.returncode != 0 or got == 0:
        message = (b"".join(errors).decode(errors="replace").strip().splitlines() or ["no audio stream"])[-1]
        raise AudioError(f"{name}: ffmpeg could not decode it as audio ({message}){hint}")


class _SeekSafe:
    """A seekable binary file for libsndfile, which seeks before the start of
    damaged files: an exception in its callback would print a traceback, so
    such a seek stays put instead."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.read, self.readinto, self.tell, self.close = f.read, f.readinto, f.tell, f.close

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._f.seek(offset, whence)
        except (ValueError, OverflowError, OSError):
            return self._f.tell()


@contextlib.contextmanager
def _c_stderr_silenced(active: bool):
    """libmpg123 (inside libsndfile) prints notes about damaged MP3 frames
    straight to file descriptor 2; the user gets our one-line error instead."""
    if not active:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _soundfile_chunks(f: BinaryIO, name: str, what: str):
    """(rate, float32 mono pieces) of a FLAC/OGG/MP3/AIFF/CAF file (libsndfile)
    from a seekable binary file (closed when done), read block by block: a
    corrupt header's frame count is never trusted (a damaged MP3 once asked
    for a 9 TiB array)."""
    try:
        import soundfile
    except (ImportError, OSError) as exc:  # pragma: no cover - soundfile is a dependency
        f.close()
        raise AudioError(f"{name}: {what} audio needs the soundfile package ({exc})") from None

    def fail(exc):
        # libsndfile says "Error opening <object>: reason": keep the reason
        reason = str(exc).strip().rsplit(": ", 1)[-1] or type(exc).__name__
        return AudioError(f"{name}: cannot decode this {what} {_kind(name)} ({reason})")

    errors = (RuntimeError, soundfile.LibsndfileError, ValueError, TypeError, EOFError, OverflowError)
    quiet = what == "MP3"
    try:
        with _c_stderr_silenced(quiet):
            sfile = soundfile.SoundFile(_SeekSafe(f))
        if not 1 <= sfile.channels <= MAX_CHANNELS:
            sfile.close()
            raise AudioError(f"{name}: {sfile.channels} channels (supported: 1..{MAX_CHANNELS})")
        rate = check_sample_rate(sfile.samplerate, f"{name}: {what} sample rate", AudioError)
    except errors as exc:
        f.close()
        raise fail(exc) from None
    except AudioError:
        f.close()
        raise

    def pieces():
        try:
            with sfile:
                while True:
                    try:
                        with _c_stderr_silenced(quiet):
                            block = sfile.read(_READ_BYTES, dtype="float32", always_2d=True)
                    except errors as exc:
                        raise fail(exc) from None
                    if block.shape[0] == 0:
                        return
                    yield samples_to_float(block, name)
        finally:
            f.close()

    return rate, pieces()


def _wav_chunks(f: BinaryIO, name: str):
    """(rate, float32 mono pieces) of a WAV stream: the header, then the
    samples as they arrive; a stream shorter than the header says is refused."""
    header = read_wav_header(f, name=name)
    fmt, remaining = header.sample_format, header.data_size

    def pieces():
        nonlocal remaining
        carry = b""
        while remaining is None or remaining > 0:
            data = f.read(_READ_BYTES if remaining is None else min(_READ_BYTES, remaining))
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            buf = carry + data
            usable = len(buf) - len(buf) % fmt.frame_bytes
            carry = buf[usable:]
            if usable:
                yield pcm_bytes_to_float(buf[:usable], fmt, name=name)
        if remaining:
            raise AudioError(
                f"{name}: truncated: header says {header.data_size} bytes of audio, "
                f"{_kind(name)} has {header.data_size - remaining}"
            )

    return header.rate, pieces()


def _raw_chunks(f: BinaryIO, fmt: SampleFormat, name: str):
    carry = b""
    while True:
        data = f.read(_READ_BYTES)
        if not data:
            if carry:  # a partial frame at the very end is dropped, not silently
                warnings.warn(
                    f"{name}: the raw input ends with {len(carry)} byte(s) that are not a whole "
                    f"{fmt.frame_bytes}-byte frame; they were ignored",
                    AudioWarning,
                    stacklevel=2,
                )
            return
        buf = carry + data
        usable = len(buf) - len(buf) % fmt.frame_bytes
        carry = buf[usable:]
        if usable:
            yield pcm_bytes_to_float(buf[:usable], fmt, name=name)


class _Prefixed:
    """A binary reader that serves already-read bytes before the rest, with
    short reads as they come (a pipe is not waited on to fill a buffer)."""

    def __init__(self, prefix: bytes, f: BinaryIO):
        self._prefix, self._f = prefix, f

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n < 0:
                out, self._prefix = self._prefix, b""
                return out + (self._f.read() or b"")
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            return out
        if n < 0:
            return self._f.read() or b""
        read1 = getattr(self._f, "read1", None)
        return (read1(n) if read1 else self._f.read(n)) or b""


def read_audio_stream(
    f: BinaryIO,
    target_rate: int = TARGET_SAMPLE_RATE,
    *,
    name: str = "<stdin>",
    raw_format: str | SampleFormat | None = None,
    raw_rate: int = TARGET_SAMPLE_RATE,
    path: str | None = None,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Float32 mono pieces at ``target_rate`` from any audio input: the one
    detection (by magic bytes) and validation path of files, bytes and stdin.

    WAV is parsed here and streamed as it arrives; FLAC, OGG (Vorbis, Opus),
    MP3, AIFF and CAF are decoded by libsndfile (``soundfile``) once complete;
    other containers (m4a, mp4, webm...) by ``ffmpeg`` when it is installed
    (``path``, if given, lets ffmpeg seek in the file). Input that matches no
    known format is raw PCM only when ``raw_format`` is given (at
    ``raw_rate``, mono); otherwise it is refused, as is text, a truncated WAV
    or absurd header values (:class:`AudioError`). ``max_seconds`` bounds a
    whole-file read (a live stream has no bound)."""
    target_rate = check_sample_rate(target_rate, "target_rate")
    raw = None
    if raw_format is not None:
        raw = raw_format if isinstance(raw_format, SampleFormat) else SampleFormat.parse(raw_format)
        raw_rate = check_sample_rate(raw_rate, "raw PCM rate (--raw-rate)")
    start = f.tell() if _seekable(f) else None
    head = read_exact(f, _SNIFF_BYTES)
    if not head:
        raise AudioError(f"{name}: empty {_kind(name)}, no audio")
    reader = _Prefixed(head, f)
    decoder, what = sniff_format(head)
    if decoder == "ffmpeg" and path is None and what in _SEEKING_CONTAINERS:
        # ffmpeg cannot read these from a pipe (the index may be at the end): a temporary file
        yield from _via_temporary_file(reader, target_rate, name, what, max_seconds)
        return
    if decoder == "ffmpeg" or (decoder == "unknown" and raw is None and _ffmpeg() is not None):
        got = 0
        hint = f"; {_RAW_HINT}" if decoder == "unknown" else ""
        for y in _ffmpeg_chunks(path or reader, target_rate, name, what, hint):
            got += y.shape[0]
            if max_seconds is not None and got > max_seconds * target_rate:
                raise AudioError(_too_long(name, max_seconds))
            yield y
        return
    if decoder == "wav":
        rate, pieces = _wav_chunks(reader, name)
    elif decoder == "soundfile":
        if path:
            source = open(path, "rb")
        elif start is not None:  # libsndfile reads the file itself: no copy of it in memory
            f.seek(start)
            source = f
        else:
            source = io.BytesIO(reader.read())
        rate, pieces = _soundfile_chunks(source, name, what)
    elif raw is not None:
        rate, pieces = raw_rate, _raw_chunks(reader, raw, name)
    elif decoder == "text":
        raise AudioError(f"{name}: this is text, not audio")
    else:
        raise AudioError(
            f"{name}: not a recognised audio format (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF; others need ffmpeg); "
            + _RAW_HINT
        )
    resample = Resampler(rate, target_rate)
    got = 0
    for x in pieces:
        got += x.shape[0]
        if max_seconds is not None and got > max_seconds * rate:
            raise AudioError(_too_long(name, max_seconds))
        y = resample(x)
        if y.shape[0]:
            yield y
    tail = resample(np.zeros(0, dtype=np.float32), last=True)
    if tail.shape[0]:
        yield tail
    if got == 0:
        raise AudioError(f"{name}: no audio samples")


def _too_long(name: str, max_seconds: float) -> str:
    limit = f"{max_seconds / 3600:g} hours" if max_seconds >= 3600 else f"{max_seconds:g} s"
    return f"{name}: longer than {limit} of audio; split it"


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _via_temporary_file(reader, target_rate: int, name: str, what: str, max_seconds: float | None):
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="voxtral-", suffix=".audio") as tmp:
        shutil.copyfileobj(reader, tmp, _READ_BYTES)
        tmp.flush()
        got = 0
        for y in _ffmpeg_chunks(tmp.name, target_rate, name, what):
            got += y.shape[0]
            if max_seconds is not None and got > max_seconds * target_rate:
                raise AudioError(_too_long(name, max_seconds))
            yield y


def _whole(f: BinaryIO, target_rate: int, name: str, path: str | None, max_seconds: float) -> np.ndarray:
    """All of the audio in one array: pieces are copied into a buffer that
    grows in place (realloc), so the decoded audio is held once, not twice."""
    buf = np.empty(0, dtype=np.float32)
    n = 0
    for piece in read_audio_stream(f, target_rate, name=name, path=path, max_seconds=max_seconds):
        if n + piece.shape[0] > buf.shape[0]:
            buf.resize(max(n + piece.shape[0], buf.shape[0] + buf.shape[0] // 4, 1 << 16), refcheck=False)
        buf[n : n + piece.shape[0]] = piece
        n += piece.shape[0]
    buf.resize(n, refcheck=False)
    return buf


def load_audio(
    source: PathLike | bytes | bytearray | memoryview | BinaryIO | np.ndarray,
    sample_rate: int | None = None,
    target_rate: int = TARGET_SAMPLE_RATE,
    *,
    max_seconds: float = MAX_AUDIO_SECONDS,
) -> np.ndarray:
    """Load audio as a 1-D float32 mono array at ``target_rate`` (16 kHz).

    ``source`` is a path or the bytes of an audio file (WAV, FLAC, OGG/Vorbis/Opus,
    MP3, AIFF; anything else through ffmpeg if installed), or a numpy array of
    samples (1-D, or 2-D ``[samples, channels]``, downmixed by averaging) whose
    rate ``sample_rate`` must then be given. int16 arrays are scaled by 1/32768,
    int32 by 1/2^31, uint8 centred at 128; float arrays are taken as is (values
    outside [-1, 1] are kept, not clipped). Raises :class:`AudioError` for
    unreadable, malformed, unsupported, empty, or NaN/Inf audio and
    :class:`UsageError` for invalid arguments. A binary file object is read
    from where it stands. Audio longer than ``max_seconds`` is refused while
    it is decoded, before it is held in memory.
    """
    target_rate = check_sample_rate(target_rate, "target_rate")

    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise UsageError("load_audio: sample_rate is required when passing a numpy array")
        sample_rate = check_sample_rate(sample_rate, "load_audio: sample_rate")
        name = "<array>"
        x = samples_to_float(source, name)
        if x.size == 0:
            raise AudioError(f"{name}: no audio samples (empty array)")
        return resample(x, int(sample_rate), target_rate, name=name)

    if sample_rate is not None:
        raise UsageError("load_audio: sample_rate is only for numpy arrays (a WAV file carries its own rate)")

    if isinstance(source, (bytes, bytearray, memoryview)):
        return _whole(io.BytesIO(source), target_rate, "<bytes>", None, max_seconds)

    if hasattr(source, "read"):
        return _whole(source, target_rate, "<upload>", None, max_seconds)

    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        try:
            f = open(source, "rb")
        except FileNotFoundError:
            raise AudioError(f"{name}: file not found") from None
        except IsADirectoryError:
            raise AudioError(f"{name}: is a directory, not an audio file") from None
        except PermissionError:
            raise AudioError(f"{name}: permission denied") from None
        except OSError as e:
            raise AudioError(f"{name}: cannot open ({e.strerror or e})") from None
        try:
            with f:
                return _whole(f, target_rate, name, name, max_seconds)
        except OSError as e:
            raise AudioError(f"{name}: read error ({e.strerror or e})") from None

    raise UsageError(f"load_audio: source must be a path, WAV bytes or a numpy array, not {type(source).__name__}")
