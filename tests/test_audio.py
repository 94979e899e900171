"""Tests for voxtral.audio: WAV parsing in every supported format, resampling,
array input, real recordings, and every error case."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voxtral.audio import (
    SampleFormat,
    WavHeader,
    decode_wav,
    is_wav_prefix,
    load_audio,
    pcm_bytes_to_float,
    read_wav_header,
)
from voxtral.errors import AudioError, UsageError

REPO = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO.parent / "shared" / "data" / "audio"
REAL_WAVS = sorted(AUDIO_DIR.glob("*.wav"))

GUID_SUFFIX = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


# ---------------------------------------------------------------------------
# A WAV writer independent of the code under test


def chunk(cid: bytes, body: bytes) -> bytes:
    out = cid + struct.pack("<I", len(body)) + body
    if len(body) % 2:
        out += b"\x00"
    return out


def fmt_body(
    tag: int,
    channels: int,
    rate: int,
    bits: int,
    extensible: bool = False,
    sub_tag: int | None = None,
    valid_bits: int | None = None,
) -> bytes:
    block_align = channels * ((bits + 7) // 8)
    byte_rate = rate * block_align
    if not extensible:
        return struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits)
    guid = struct.pack("<H", sub_tag) + GUID_SUFFIX
    return (
        struct.pack(
            "<HHIIHHHHI",
            0xFFFE,
            channels,
            rate,
            byte_rate,
            block_align,
            bits,
            22,
            valid_bits or bits,
            (1 << channels) - 1,
        )
        + guid
    )


def make_wav(
    data: bytes,
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    extensible: bool = False,
    sub_tag: int | None = None,
    before: list[bytes] = (),
    after: list[bytes] = (),
    data_size: int | None = None,
    rf64: bool = False,
    fmt: bytes | None = None,
) -> bytes:
    fmtc = chunk(b"fmt ", fmt if fmt is not None else fmt_body(tag, channels, rate, bits, extensible, sub_tag))
    size = len(data) if data_size is None else data_size
    datac = b"data" + struct.pack("<I", size) + data + (b"\x00" if len(data) % 2 else b"")
    body = b"WAVE"
    if rf64:
        ds64 = struct.pack("<QQQI", 0, len(data), len(data) // max(1, channels * bits // 8), 0)
        body += chunk(b"ds64", ds64)
    body += fmtc + b"".join(before) + datac + b"".join(after)
    riff = b"RF64" if rf64 else b"RIFF"
    return riff + struct.pack("<I", 0xFFFFFFFF if rf64 else len(body)) + body


def int_pcm(values: np.ndarray, bits: int) -> bytes:
    """values: integer sample values (already in range) -> little-endian bytes."""
    if bits == 8:
        return values.astype(np.uint8).tobytes()
    if bits == 16:
        return values.astype("<i2").tobytes()
    if bits == 32:
        return values.astype("<i4").tobytes()
    if bits == 24:
        v = values.astype(np.int64) & 0xFFFFFF
        b = np.stack([(v >> 0) & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=-1).astype(np.uint8)
        return b.tobytes()
    raise ValueError(bits)


def random_ints(rng: np.random.Generator, bits: int, n: int) -> np.ndarray:
    if bits == 8:
        v = rng.integers(0, 256, n)
        v[:2] = [0, 255]
        return v
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = rng.integers(lo, hi + 1, n, dtype=np.int64)
    v[:3] = [lo, hi, 0]
    return v


def expected_int(values: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return ((values.astype(np.float64) - 128) / 128).astype(np.float32)
    return (values.astype(np.float64) / float(1 << (bits - 1))).astype(np.float32)


# ---------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
@pytest.mark.parametrize("extensible", [False, True])
def test_int_pcm_exact(bits, extensible, tmp_path):
    rng = np.random.default_rng(bits)
    v = random_ints(rng, bits, 4001)
    wav = make_wav(int_pcm(v, bits), bits=bits, extensible=extensible, sub_tag=1)
    path = tmp_path / f"i{bits}.wav"
    path.write_bytes(wav)
    want = expected_int(v, bits)
    for src in (path, str(path), wav):
        got = load_audio(src)
        assert got.dtype == np.float32 and got.ndim == 1
        np.testing.assert_array_equal(got, want)
    h = read_wav_header(wav)
    assert (h.format, h.channels, h.rate, h.bits) == ("pcm", 1, 16000, bits)
    assert h.data_size == len(v) * bits // 8
    assert h.format_tag == (0xFFFE if extensible else 1)
    assert wav[h.data_offset : h.data_offset + 4] == int_pcm(v, bits)[:4]


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("extensible", [False, True])
def test_float_pcm_exact(bits, extensible):
    rng = np.random.default_rng(bits)
    x = rng.uniform(-1.5, 1.5, 3000).astype(np.float32)  # out-of-range values are kept, not clipped
    x[:3] = [1.0, -1.0, 0.0]
    data = x.astype("<f4" if bits == 32 else "<f8").tobytes()
    wav = make_wav(data, tag=3, bits=bits, extensible=extensible, sub_tag=3)
    got = load_audio(wav)
    np.testing.assert_array_equal(got, x)
    assert got.max() > 1.0 and got.min() < -1.0
    assert read_wav_header(wav).format == "float"


def test_float64_values_rounded_to_float32():
    x = np.random.default_rng(0).standard_normal(1000)
    got = load_audio(make_wav(x.astype("<f8").tobytes(), tag=3, bits=64))
    np.testing.assert_array_equal(got, x.astype(np.float32))


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_multichannel_downmix(channels):
    rng = np.random.default_rng(channels)
    v = rng.integers(-32768, 32768, (2000, channels))
    wav = make_wav(v.astype("<i2").tobytes(), channels=channels)
    got = load_audio(wav)
    want = (v / 32768.0).astype(np.float32).mean(axis=1, dtype=np.float32)
    assert got.shape == (2000,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_stereo_extensible_float():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1000, 2)).astype(np.float32)
    wav = make_wav(x.astype("<f4").tobytes(), channels=2, bits=32, extensible=True, sub_tag=3)
    got = load_audio(wav)
    np.testing.assert_allclose(got, x.mean(axis=1), atol=1e-7)


def test_extensible_24_in_32_container():
    # 24 valid bits left-justified in 32-bit containers decode as int32 / 2^31.
    v = np.array([0, 1 << 8, -(1 << 31), (1 << 31) - 256], dtype=np.int64)
    fmt = fmt_body(0xFFFE, 1, 16000, 32, extensible=True, sub_tag=1, valid_bits=24)
    wav = make_wav(v.astype("<i4").tobytes(), fmt=fmt)
    np.testing.assert_array_equal(load_audio(wav), (v / 2.0**31).astype(np.float32))
    assert read_wav_header(wav).valid_bits == 24


def test_unknown_and_odd_chunks_skipped():
    v = np.arange(-50, 51, dtype=np.int16)
    wav = make_wav(
        v.tobytes(),
        before=[chunk(b"LIST", b"abc"), chunk(b"junk", b"x" * 7), chunk(b"fact", b"\x01\x02\x03\x04")],
        after=[chunk(b"LIST", b"trailing")],
    )
    np.testing.assert_array_equal(load_audio(wav), v / np.float32(32768))
    # an odd-sized chunk before fmt
    body = b"WAVE" + chunk(b"bext", b"q" * 5) + chunk(b"fmt ", fmt_body(1, 1, 16000, 16)) + chunk(b"data", v.tobytes())
    wav2 = b"RIFF" + struct.pack("<I", len(body)) + body
    np.testing.assert_array_equal(load_audio(wav2), v / np.float32(32768))


def test_odd_sized_8bit_data_chunk_with_pad_and_trailing_chunk():
    v = np.array([0, 128, 255], dtype=np.uint8)
    wav = make_wav(v.tobytes(), bits=8, after=[chunk(b"LIST", b"zz")])
    np.testing.assert_array_equal(load_audio(wav), np.array([-1, 0, 127 / 128], np.float32))


def test_rf64():
    v = np.arange(1000, dtype=np.int16)
    wav = make_wav(v.tobytes(), rf64=True, data_size=0xFFFFFFFF)
    h = read_wav_header(wav)
    assert h.container == "RF64" and h.data_size == 2000
    np.testing.assert_array_equal(load_audio(wav), v / np.float32(32768))


def test_misleading_riff_size_ignored():
    v = np.arange(100, dtype=np.int16)
    wav = bytearray(make_wav(v.tobytes()))
    wav[4:8] = struct.pack("<I", 12345678)
    np.testing.assert_array_equal(load_audio(bytes(wav)), v / np.float32(32768))


def test_data_size_not_whole_frames_drops_partial():
    v = np.arange(10, dtype=np.int16)
    wav = make_wav(v.tobytes() + b"\x07", data_size=21)
    np.testing.assert_array_equal(load_audio(wav), v / np.float32(32768))


# ---------------------------------------------------------------------------
# Streaming-style headers (pipes)


@pytest.mark.parametrize("size_field", [0, 0xFFFFFFFF])
def test_unknown_data_size_reads_to_eof(size_field, tmp_path):
    v = np.arange(-500, 500, dtype=np.int16)
    wav = make_wav(v.tobytes() + b"\x01", data_size=size_field)[:-1]  # drop pad -> trailing partial frame of 1 byte
    assert read_wav_header(wav).data_size is None
    np.testing.assert_array_equal(load_audio(wav), v / np.float32(32768))
    p = tmp_path / "pipe.wav"
    p.write_bytes(wav)
    np.testing.assert_array_equal(load_audio(p), v / np.float32(32768))


class PipeLike(io.RawIOBase):
    """A non-seekable stream that returns short reads."""

    def __init__(self, data: bytes, step: int = 5):
        self._b = io.BytesIO(data)
        self._step = step

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        d = self._b.read(min(len(b), self._step))
        b[: len(d)] = d
        return len(d)


def test_read_wav_header_on_pipe_leaves_position_at_samples():
    v = np.arange(300, dtype=np.int16)
    wav = make_wav(v.tobytes(), data_size=0xFFFFFFFF, before=[chunk(b"LIST", b"x" * 101)])
    pipe = PipeLike(wav, step=7)
    h = read_wav_header(pipe)
    assert isinstance(h, WavHeader) and h.data_size is None and h.rate == 16000
    rest = b""
    while True:
        c = pipe.read(64)
        if not c:
            break
        rest += c
    assert rest == v.tobytes()
    assert h.data_offset == len(wav) - len(v.tobytes())
    np.testing.assert_array_equal(pcm_bytes_to_float(rest, h), v / np.float32(32768))
    x, rate = decode_wav(PipeLike(wav, 3))
    assert rate == 16000 and len(x) == 300


def test_is_wav_prefix():
    assert is_wav_prefix(make_wav(b"\x00\x00"))
    assert not is_wav_prefix(b"ID3\x04\x00\x00\x00\x00\x00\x00\x00\x00")
    assert not is_wav_prefix(b"RIFF")


# ---------------------------------------------------------------------------
# pcm_bytes_to_float


@pytest.mark.parametrize("name,bits", [("s16le", 16), ("s24le", 24), ("s32le", 32), ("u8", 8), ("pcm_s16le", 16)])
def test_pcm_bytes_to_float_int(name, bits):
    v = random_ints(np.random.default_rng(5), bits, 999)
    np.testing.assert_array_equal(pcm_bytes_to_float(int_pcm(v, bits), name), expected_int(v, bits))


def test_pcm_bytes_to_float_float_and_channels():
    x = np.random.default_rng(2).standard_normal((100, 2)).astype(np.float32)
    got = pcm_bytes_to_float(x.tobytes(), "f32le", channels=2, downmix=False)
    np.testing.assert_array_equal(got, x)
    np.testing.assert_allclose(pcm_bytes_to_float(x.tobytes(), SampleFormat("float", 32, 2)), x.mean(1), atol=1e-7)
    np.testing.assert_array_equal(pcm_bytes_to_float(x[:, 0].astype("<f8").tobytes(), "f64le"), x[:, 0])
    assert pcm_bytes_to_float(b"", "s16le").shape == (0,)


def test_pcm_bytes_to_float_errors():
    with pytest.raises(AudioError, match="whole number"):
        pcm_bytes_to_float(b"\x00\x01\x02", "s16le")
    with pytest.raises(AudioError, match="NaN or infinite"):
        pcm_bytes_to_float(np.array([0, np.nan], np.float32).tobytes(), "f32le")
    with pytest.raises(UsageError):
        pcm_bytes_to_float(b"", "s12be")


# ---------------------------------------------------------------------------
# Resampling


def fft_peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("rate", [44100, 8000, 48000, 22050])
def test_resampled_sine_keeps_frequency(rate):
    seconds = 2.0
    t = np.arange(int(rate * seconds)) / rate
    sine = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    v = np.round(sine * 32767).astype(np.int16)
    got = load_audio(make_wav(v.tobytes(), rate=rate))
    assert got.dtype == np.float32
    assert abs(len(got) - 32000) <= 1
    assert abs(fft_peak_hz(got, 16000) - 440.0) < 1.0
    mid = got[4000:-4000]
    assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / np.sqrt(2)) < 0.01
    # the same through the array path
    got2 = load_audio(sine.astype(np.float32), sample_rate=rate)
    assert abs(len(got2) - 32000) <= 1 and abs(fft_peak_hz(got2, 16000) - 440.0) < 1.0


def test_no_resampling_at_16k_and_custom_target():
    x = np.random.default_rng(0).uniform(-1, 1, 1600).astype(np.float32)
    np.testing.assert_array_equal(load_audio(x, sample_rate=16000), x)
    assert len(load_audio(x, sample_rate=16000, target_rate=8000)) == 800


# ---------------------------------------------------------------------------
# Array input


def test_array_dtypes():
    i16 = np.array([-32768, 0, 16384, 32767], np.int16)
    np.testing.assert_array_equal(load_audio(i16, 16000), i16 / np.float32(32768))
    i32 = np.array([-(2**31), 0, 2**30, 2**31 - 1], np.int32)
    np.testing.assert_array_equal(load_audio(i32, 16000), (i32 / 2.0**31).astype(np.float32))
    u8 = np.array([0, 128, 192, 255], np.uint8)
    np.testing.assert_array_equal(load_audio(u8, 16000), np.array([-1, 0, 0.5, 127 / 128], np.float32))
    f64 = np.array([-2.0, 0.25, 3.0])
    np.testing.assert_array_equal(load_audio(f64, 16000), f64.astype(np.float32))
    st = np.array([[0.5, -0.5], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(load_audio(st, 16000), np.array([0.0, 0.5], np.float32))
    np.testing.assert_array_equal(load_audio(st[:, :1], 16000), st[:, 0])
    i16st = np.array([[100, 300], [-200, -400]], np.int16)
    np.testing.assert_allclose(load_audio(i16st, 16000), np.array([200, -300]) / 32768, atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_array_nan_inf(bad):
    x = np.zeros(100, np.float32)
    x[50] = bad
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(x, 16000)


def test_array_errors():
    with pytest.raises(UsageError, match="sample_rate"):
        load_audio(np.zeros(10, np.float32))
    with pytest.raises(UsageError):
        load_audio(np.zeros(10, np.float32), sample_rate=0)
    with pytest.raises(AudioError, match="empty"):
        load_audio(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(np.zeros((0, 2), np.float32), 16000)
    with pytest.raises(AudioError, match="0 channels"):
        load_audio(np.zeros((10, 0), np.float32), 16000)
    with pytest.raises(AudioError, match="shape"):
        load_audio(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(AudioError, match="channels, samples"):
        load_audio(np.zeros((2, 16000), np.float32), 16000)
    with pytest.raises(AudioError, match="dtype"):
        load_audio(np.zeros(10, np.complex64), 16000)
    with pytest.raises(UsageError):
        load_audio(12345)
    with pytest.raises(UsageError):
        load_audio(make_wav(b"\x00\x00"), sample_rate=16000)


# ---------------------------------------------------------------------------
# Real recordings


@pytest.mark.skipif(not REAL_WAVS, reason="shared test audio not present")
@pytest.mark.parametrize("path", REAL_WAVS, ids=lambda p: p.name)
def test_real_recordings_match_stdlib_wave(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        want = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    got = load_audio(path)
    np.testing.assert_array_equal(got, want)
    h = read_wav_header(path.read_bytes())
    assert (h.format, h.channels, h.rate, h.bits) == ("pcm", 1, 16000, 16)
    with open(path, "rb") as f:
        h2 = read_wav_header(f)
        assert f.tell() == h2.data_offset == h.data_offset
    assert h.num_frames == len(want)


# ---------------------------------------------------------------------------
# Errors


def test_truncated_data_chunk(tmp_path):
    v = np.arange(1000, dtype=np.int16)
    wav = make_wav(v.tobytes())[:-300]
    p = tmp_path / "cut.wav"
    p.write_bytes(wav)
    with pytest.raises(AudioError, match=r"cut\.wav: truncated: header says 2000 bytes of audio, file has 1700"):
        load_audio(p)
    with pytest.raises(AudioError, match="truncated"):
        load_audio(wav)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 100, "cannot decode this MP3 file"),  # fake mp3
        (b"hello, this is a text file\n", "this is text, not audio"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "ffmpeg"),  # RIFF but not WAVE: only ffmpeg might read it
        (b"RI", "text"),  # too short to be anything; printable
    ],
)
def test_not_audio(content, message, tmp_path):
    p = tmp_path / "song.mp3"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=r"song\.mp3: .*" + message) as ei:
        load_audio(p)
    assert "\n" not in str(ei.value) and "object at" not in str(ei.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: empty file"):
        load_audio(p)


def test_missing_fmt_and_data():
    body = b"WAVE" + chunk(b"data", b"\x00\x00")
    with pytest.raises(AudioError, match="fmt"):
        load_audio(b"RIFF" + struct.pack("<I", len(body)) + body)
    body = b"WAVE" + chunk(b"LIST", b"abcd")
    with pytest.raises(AudioError, match="no fmt chunk"):
        load_audio(b"RIFF" + struct.pack("<I", len(body)) + body)
    body = b"WAVE" + chunk(b"fmt ", fmt_body(1, 1, 16000, 16)) + chunk(b"LIST", b"abcd")
    with pytest.raises(AudioError, match="no data chunk"):
        load_audio(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(AudioError, match="no data chunk"):
        load_audio(b"RIFF" + struct.pack("<I", len(body)) + body[:-3])
    with pytest.raises(AudioError, match="truncated WAV header"):
        load_audio((b"RIFF" + struct.pack("<I", len(body)) + body)[:30])
    with pytest.raises(AudioError, match="fmt chunk too short"):
        load_audio(make_wav(b"\x00\x00", fmt=b"\x01\x00\x01\x00"))


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(tag=0x55), "MP3"),
        (dict(tag=6, bits=8), "A-law"),
        (dict(tag=2, bits=4), "0x0002"),
        (dict(tag=1, bits=40), "bit depth 40"),
        (dict(tag=3, bits=16), "float bit depth 16"),
        (dict(extensible=True, sub_tag=0x55), "MP3"),
    ],
)
def test_unsupported_formats(kw, msg):
    with pytest.raises(AudioError, match=msg):
        load_audio(make_wav(b"\x00" * 40, **kw))


def test_unsupported_extensible_guid():
    fmt = bytearray(fmt_body(0xFFFE, 1, 16000, 16, extensible=True, sub_tag=1))
    fmt[-1] ^= 0xFF
    with pytest.raises(AudioError, match="sub-format"):
        load_audio(make_wav(b"\x00" * 4, fmt=bytes(fmt)))


def test_zero_channels_or_rate():
    with pytest.raises(AudioError, match="0 channels"):
        load_audio(make_wav(b"\x00" * 4, fmt=struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16)))
    with pytest.raises(AudioError, match="0 Hz"):
        load_audio(make_wav(b"\x00" * 4, fmt=struct.pack("<HHIIHH", 1, 1, 0, 0, 2, 16)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("bits", [32, 64])
def test_float_wav_nan_inf(bad, bits, tmp_path):
    x = np.zeros(64)
    x[10] = bad
    p = tmp_path / "nan.wav"
    p.write_bytes(make_wav(x.astype("<f4" if bits == 32 else "<f8").tobytes(), tag=3, bits=bits))
    with pytest.raises(AudioError, match=r"nan\.wav: audio contains 1 NaN or infinite"):
        load_audio(p)


def test_empty_data_chunk():
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(make_wav(b""))
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(make_wav(b"\x01", data_size=0xFFFFFFFF)[:-1])  # only a partial frame


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)
