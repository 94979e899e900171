"""Audio people have: FLAC, OGG/Vorbis, OGG/Opus, MP3 (libsndfile), m4a
(ffmpeg), from files, bytes and --stdin, all through the one detection path
(``audio.read_audio_stream``). Files are made here from the shared recordings
and decoded samples are compared with the WAV's:

- FLAC (lossless): identical samples.
- Vorbis, Opus, MP3 (libsndfile's encoders, default quality): same length,
  no lag, signal-to-error ratio >= 15 dB (measured ~21-25 dB).
- AAC in m4a (ffmpeg's encoder, 96 kb/s): no lag, >= 25 dB over the common
  length (measured ~39 dB); the decoder may add up to one frame of padding.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import voxtral
from voxtral.audio import load_audio, read_audio_stream, sniff_format
from voxtral.errors import AudioError

sf = pytest.importorskip("soundfile")

NAME = "night1968_5s_dont_worry_about_him"
LOSSY_DB = 15.0
AAC_DB = 25.0
FORMATS = {  # extension: (soundfile format, subtype, minimum SNR in dB or None for exact)
    "flac": ("FLAC", "PCM_16", None),
    "ogg": ("OGG", "VORBIS", LOSSY_DB),
    "opus": ("OGG", "OPUS", LOSSY_DB),
    "mp3": ("MP3", "MPEG_LAYER_III", LOSSY_DB),
}
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def files(audio_dir, tmp_path_factory):
    """{ext: path} of the recording in every format (m4a only with ffmpeg)."""
    wav = audio_dir / f"{NAME}.wav"
    pcm, rate = sf.read(str(wav), dtype="int16")
    out = tmp_path_factory.mktemp("formats")
    paths = {"wav": wav}
    for ext, (fmt, subtype, _) in FORMATS.items():
        paths[ext] = out / f"{NAME}.{ext}"
        sf.write(str(paths[ext]), pcm, rate, format=fmt, subtype=subtype)
    if shutil.which("ffmpeg"):
        paths["m4a"] = out / f"{NAME}.m4a"
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "96k", str(paths["m4a"])],
            check=True,
        )
    return paths


def _snr_db(ref, got):
    n = min(len(ref), len(got))
    err = np.sum((ref[:n].astype(np.float64) - got[:n]) ** 2)
    return 10 * np.log10(np.sum(ref[:n].astype(np.float64) ** 2) / max(err, 1e-30))


@pytest.mark.parametrize("ext", list(FORMATS))
def test_file_formats_decode_like_the_wav(files, ext):
    ref = load_audio(files["wav"])
    got = load_audio(files[ext])
    assert got.dtype == np.float32 and got.ndim == 1
    assert len(got) == len(ref)
    min_db = FORMATS[ext][2]
    if min_db is None:
        np.testing.assert_array_equal(got, ref)
    else:
        assert _snr_db(ref, got) >= min_db
        # no lag: the error is far larger one sample off
        assert _snr_db(ref, got) > _snr_db(ref[1:], got) + 6


@pytest.mark.parametrize("ext", list(FORMATS))
def test_bytes_decode_like_the_file(files, ext):
    np.testing.assert_array_equal(load_audio(files[ext].read_bytes()), load_audio(files[ext]))


@needs_ffmpeg
def test_m4a_through_ffmpeg(files):
    ref = load_audio(files["wav"])
    got = load_audio(files["m4a"])
    assert len(ref) <= len(got) <= len(ref) + 1024
    assert _snr_db(ref, got) >= AAC_DB
    assert _snr_db(ref, got) > _snr_db(ref[1:], got) + 6
    # the same bytes through a pipe (no seeking)
    piped = np.concatenate(list(read_audio_stream(io.BytesIO(files["m4a"].read_bytes()))))
    np.testing.assert_array_equal(piped, got)


def test_without_ffmpeg_the_error_names_it(files, tmp_path, monkeypatch):
    import voxtral.audio as A

    monkeypatch.setattr(A, "_ffmpeg", lambda: None)
    fake_m4a = tmp_path / "x.m4a"
    fake_m4a.write_bytes(b"\0\0\0\x20ftypM4A \0\0\0\0" + b"\0" * 100)
    with pytest.raises(AudioError, match=r"x\.m4a: MP4/M4A audio needs ffmpeg, which is not installed") as ei:
        load_audio(fake_m4a)
    assert "\n" not in str(ei.value)


def test_sniff_format_by_magic_bytes(files):
    assert sniff_format(files["wav"].read_bytes()[:12]) == ("wav", "WAV")
    assert sniff_format(files["flac"].read_bytes()[:12]) == ("soundfile", "FLAC")
    assert sniff_format(files["ogg"].read_bytes()[:12]) == ("soundfile", "OGG")
    assert sniff_format(files["opus"].read_bytes()[:12]) == ("soundfile", "OGG")
    assert sniff_format(files["mp3"].read_bytes()[:12])[0] == "soundfile"
    assert sniff_format(b"\xff\xfb\x90\x00" + b"\0" * 8) == ("soundfile", "MP3")  # bare MPEG frame
    assert sniff_format(b"\0\0\0\x18ftypM4A \0\0") == ("ffmpeg", "MP4/M4A")
    assert sniff_format(b"\x1a\x45\xdf\xa3" + b"\0" * 8) == ("ffmpeg", "Matroska/WebM")
    assert sniff_format(b"hello world!") == ("text", "text")
    assert sniff_format(b"\x00\x01\x02\x03" * 3) == ("unknown", "unknown")


def test_stream_truncated_wav_is_refused(files):
    data = files["wav"].read_bytes()
    with pytest.raises(AudioError, match="truncated"):
        list(read_audio_stream(io.BytesIO(data[: len(data) // 2])))


def test_raw_pcm_only_when_asked(files):
    pcm = np.arange(-800, 800, dtype="<i2").tobytes() * 10
    with pytest.raises(AudioError, match="--raw-format"):
        list(read_audio_stream(io.BytesIO(pcm)))
    got = np.concatenate(list(read_audio_stream(io.BytesIO(pcm), raw_format="s16le")))
    np.testing.assert_array_equal(got, np.frombuffer(pcm, "<i2").astype(np.float32) / 32768)
    # a recognised file stays a file even with --raw-format given
    flac = np.concatenate(list(read_audio_stream(io.BytesIO(files["flac"].read_bytes()), raw_format="s16le")))
    np.testing.assert_array_equal(flac, load_audio(files["wav"]))


# ---- through the CLI's --stdin ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_ckpt):
    return voxtral.load(tiny_ckpt["native"])


def _cli_stdin(tiny_ckpt, data: bytes, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral",
            "--stdin",
            "--format",
            "jsonl",
            "--quiet",
            *extra,
            "--model",
            str(tiny_ckpt["native"]),
        ],
        input=data,
        capture_output=True,
        timeout=600,
    )


def _tokens(out: bytes) -> list[int]:
    rows = [json.loads(line) for line in out.decode().splitlines()]
    return [r["token"] for r in rows if r["token"] >= 0]


@pytest.mark.parametrize("ext", ["flac", "ogg", "opus", "mp3", pytest.param("m4a", marks=needs_ffmpeg)])
def test_stdin_reads_each_format_like_the_file(tiny_ckpt, tiny_model, files, ext):
    r = _cli_stdin(tiny_ckpt, files[ext].read_bytes())
    assert r.returncode == 0, r.stderr
    expected = tiny_model.transcribe(files[ext]).token_ids
    assert len(set(expected)) > 5
    assert _tokens(r.stdout) == expected


@pytest.mark.parametrize("cut", ["text", "truncated_wav", "fake_mp3"])
def test_stdin_refuses_what_the_file_path_refuses(tiny_ckpt, files, tmp_path, cut):
    wav = files["wav"].read_bytes()
    data = {
        "text": b"this is not audio at all\n" * 10,
        "truncated_wav": wav[: len(wav) // 2],
        "fake_mp3": b"ID3\x04\0\0\0\0\0\0" + b"\xff\xfb" * 200,
    }[cut]
    r = _cli_stdin(tiny_ckpt, data)
    assert r.returncode == voxtral.AudioError.exit_code, r.stderr
    err = r.stderr.decode()
    assert err.count("voxtral: error:") == 1 and "Traceback" not in err
    p = tmp_path / "same"
    p.write_bytes(data)
    with pytest.raises(AudioError):
        load_audio(p)


@pytest.mark.parametrize("rate", ["0", "-16000", "1", "100"])
def test_stdin_raw_rate_out_of_bounds_is_one_line_usage_error(tiny_ckpt, rate):
    r = _cli_stdin(tiny_ckpt, b"\0" * 32000, "--raw-format", "s16le", "--raw-rate", rate)
    assert r.returncode == voxtral.UsageError.exit_code, r.stderr
    err = r.stderr.decode()
    assert err.count("voxtral: error:") == 1 and "Traceback" not in err and "raw" in err


@needs_ffmpeg
def test_ffmpeg_never_reads_a_file_name_as_a_protocol(files, tmp_path):
    odd = tmp_path / "http:x.m4a"
    shutil.copy(files["m4a"], odd)
    np.testing.assert_array_equal(load_audio(odd), load_audio(files["m4a"]))


# ---- damaged files: typed errors only (reproducers of what a fuzz loop found) --


def _encoded(audio_dir, fmt, subtype, n=8000):
    pcm, rate = sf.read(str(audio_dir / f"{NAME}.wav"), dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, pcm[:n], rate, format=fmt, subtype=subtype)
    return bytearray(buf.getvalue())


def test_mp3_whose_header_lies_about_its_length(audio_dir):
    """A Xing header claiming 2^31 frames made soundfile.read() ask for a
    9 TiB array (MemoryError); blocks are read until the data really ends."""
    data = _encoded(audio_dir, "MP3", "MPEG_LAYER_III")
    at = data.find(b"Xing")
    assert at >= 0, "no Xing header to damage"
    data[at + 8 : at + 12] = b"\x7f\xff\xff\xff"  # the frame count
    got = np.concatenate(list(read_audio_stream(io.BytesIO(bytes(data)))))
    assert abs(len(got) - 8000) <= 2 * 1152  # at most the codec's padding frames


@pytest.mark.parametrize(
    "fmt, subtype",
    [
        ("WAV", "PCM_16"),
        ("FLAC", "PCM_16"),
        ("OGG", "VORBIS"),
        ("OGG", "OPUS"),
        ("MP3", "MPEG_LAYER_III"),
        ("AIFF", "PCM_16"),
    ],
)
def test_damaged_files_give_audio_errors_only(audio_dir, monkeypatch, capfd, fmt, subtype):
    import voxtral.audio as A

    monkeypatch.setattr(A, "_ffmpeg", lambda: None)  # libsndfile and our WAV reader only
    seed = _encoded(audio_dir, fmt, subtype)
    rng = np.random.default_rng(8)
    for _ in range(150):
        data = bytearray(seed)
        if rng.random() < 0.25:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 20))):
                span = 200 if rng.random() < 0.7 else len(data)
                data[int(rng.integers(0, min(len(data), span)))] = int(rng.integers(0, 256))
        try:
            for piece in read_audio_stream(io.BytesIO(bytes(data)), max_seconds=60):
                assert piece.dtype == np.float32 and np.isfinite(piece).all()
        except (AudioError, voxtral.UsageError):
            pass
    assert capfd.readouterr().err == ""  # no traceback from libsndfile callbacks, no libmpg123 notes
