"""Tests for voxtral.hub: resolving the model directory from --model, the
environment and a fake Hugging Face cache. Never touches the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from voxtral import hub
from voxtral.errors import ModelNotFoundError
from voxtral.hub import DEFAULT_REPO, resolve_model_dir
from voxtral.layout import detect_layout

NATIVE = ["consolidated.safetensors", "params.json", "tekken.json"]
HF = [
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
]


def write_files(d: Path, names: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_text("{}" if n.endswith(".json") else "placeholder")
    return d


def fake_cache(
    cache: Path,
    files: list[str],
    *,
    repo: str = DEFAULT_REPO,
    commit: str = "a" * 40,
    ref: bool = True,
    symlinks: bool = True,
) -> Path:
    """models--owner--name/{refs/main, snapshots/<commit>/..., blobs} like huggingface_hub writes."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(files):
        blob = root / "blobs" / f"{commit[:8]}{i:032x}"
        blob.write_text("{}" if n.endswith(".json") else "placeholder")
        target = snap / n
        if symlinks:
            target.symlink_to(os.path.relpath(blob, target.parent))
        else:
            target.write_bytes(blob.read_bytes())
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment: cache in tmp_path, offline, no VOXTRAL_MODEL_DIR, and a
    snapshot_download that fails the test if it would go online."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv(hub.ENV_MODEL_DIR, raising=False)
    calls = []
    try:
        import huggingface_hub
    except ImportError:
        huggingface_hub = None
    if huggingface_hub is not None:
        real = huggingface_hub.snapshot_download

        def guarded(*args, **kwargs):
            calls.append(kwargs)
            if not kwargs.get("local_files_only"):
                pytest.fail(f"network download attempted: {args} {kwargs}")
            return real(*args, **kwargs)

        monkeypatch.setattr(huggingface_hub, "snapshot_download", guarded)
    return cache, calls


def test_default_repo():
    assert DEFAULT_REPO == "mistralai/Voxtral-Mini-4B-Realtime-2602"


# ---------------------------------------------------------------------------
# Cache


def test_native_layout_in_cache(env):
    cache, calls = env
    snap = fake_cache(cache, NATIVE)
    got = resolve_model_dir()
    assert got == snap
    assert detect_layout(got) == "native"
    assert all(c.get("local_files_only") for c in calls)


def test_hf_layout_in_cache(env):
    cache, _ = env
    snap = fake_cache(cache, HF + ["tekken.json"])
    got = resolve_model_dir()
    assert got == snap and detect_layout(got) == "hf"


def test_hf_layout_single_file_and_index_only(tmp_path):
    assert detect_layout(write_files(tmp_path / "a", ["config.json", "model.safetensors"])) == "hf"
    assert detect_layout(write_files(tmp_path / "b", ["config.json", "model.safetensors.index.json"])) == "hf"
    # both layouts present: native wins
    assert detect_layout(write_files(tmp_path / "c", NATIVE + HF)) == "native"


def test_incomplete_snapshot_is_skipped_for_a_complete_one(env):
    cache, _ = env
    fake_cache(cache, ["params.json", "tekken.json"], commit="b" * 40)  # refs/main -> incomplete
    good = fake_cache(cache, NATIVE, commit="c" * 40, ref=False)
    (cache / ("models--" + DEFAULT_REPO.replace("/", "--")) / "refs" / "main").write_text("b" * 40)
    assert resolve_model_dir() == good


def test_broken_symlink_is_missing(env):
    cache, _ = env
    snap = fake_cache(cache, NATIVE)
    target = (snap / "consolidated.safetensors").resolve()
    target.unlink()  # blob gone (interrupted download)
    with pytest.raises(ModelNotFoundError):
        resolve_model_dir()


def test_cache_from_hf_home(tmp_path, monkeypatch, env):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hf_cache_dir() == tmp_path / "home" / "hub"
    snap = fake_cache(tmp_path / "home" / "hub", NATIVE)
    assert resolve_model_dir() == snap


def test_default_cache_location(monkeypatch):
    for v in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(v, raising=False)
    assert hub.hf_cache_dir() == Path("~/.cache/huggingface/hub").expanduser()


def test_fallback_without_huggingface_hub(env, monkeypatch):
    cache, _ = env
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    assert hub._hub_module() is None
    snap = fake_cache(cache, NATIVE, symlinks=False)
    assert resolve_model_dir() == snap
    # HF layout too, through the hand-written reader
    snap2 = fake_cache(cache, HF, repo="someone/other-model", commit="d" * 40)
    assert resolve_model_dir("someone/other-model") == snap2


def test_fallback_scan_directly(env):
    cache, _ = env
    snap = fake_cache(cache, NATIVE)
    assert hub._scan_cache(DEFAULT_REPO, cache) == snap
    assert hub._scan_cache("nobody/nothing", cache) is None


# ---------------------------------------------------------------------------
# Priorities


def test_env_var_beats_cache(env, tmp_path, monkeypatch):
    cache, _ = env
    fake_cache(cache, NATIVE)
    d = write_files(tmp_path / "envmodel", NATIVE)
    monkeypatch.setenv("VOXTRAL_MODEL_DIR", str(d))
    assert resolve_model_dir() == d.resolve()


def test_explicit_dir_beats_env_and_cache(env, tmp_path, monkeypatch):
    cache, _ = env
    fake_cache(cache, NATIVE)
    monkeypatch.setenv("VOXTRAL_MODEL_DIR", str(write_files(tmp_path / "envmodel", NATIVE)))
    d = write_files(tmp_path / "explicit", ["config.json", "model.safetensors"])
    assert resolve_model_dir(d) == d.resolve()
    assert resolve_model_dir(str(d)) == d.resolve()


def test_explicit_relative_dir(env, tmp_path, monkeypatch):
    write_files(tmp_path / "owner" / "name", NATIVE)
    monkeypatch.chdir(tmp_path)
    # an existing directory wins even though "owner/name" looks like a repo id
    assert resolve_model_dir("owner/name") == (tmp_path / "owner" / "name").resolve()


def test_explicit_repo_id_from_cache(env):
    cache, _ = env
    snap = fake_cache(cache, NATIVE, repo="someone/voxtral-finetune", commit="e" * 40)
    assert resolve_model_dir("someone/voxtral-finetune") == snap


def test_env_var_invalid(env, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXTRAL_MODEL_DIR", str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="VOXTRAL_MODEL_DIR=.*nope is not a directory"):
        resolve_model_dir()
    monkeypatch.setenv("VOXTRAL_MODEL_DIR", str(write_files(tmp_path / "half", ["params.json"])))
    with pytest.raises(ModelNotFoundError, match="VOXTRAL_MODEL_DIR.*consolidated.safetensors"):
        resolve_model_dir()


def test_empty_env_var_ignored(env, monkeypatch):
    cache, _ = env
    snap = fake_cache(cache, NATIVE)
    monkeypatch.setenv("VOXTRAL_MODEL_DIR", "")
    assert resolve_model_dir() == snap


# ---------------------------------------------------------------------------
# Errors


def test_missing_model_message(env):
    cache, calls = env
    with pytest.raises(ModelNotFoundError) as ei:
        resolve_model_dir()
    msg = str(ei.value)
    assert "\n" not in msg
    assert DEFAULT_REPO in msg and str(cache) in msg
    # the command of the installed huggingface_hub, and no advice to install what is installed
    assert f"`{hub.download_command()}`" in msg
    assert f"download {DEFAULT_REPO} consolidated.safetensors params.json tekken.json" in msg
    assert ("pip install" in msg) == (hub._hub_module() is None)
    assert len(msg) < 400
    assert "--model DIR" in msg and "VOXTRAL_MODEL_DIR" in msg
    assert "offline" in msg
    assert all(c.get("local_files_only") for c in calls)


@pytest.mark.parametrize("offline_var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_never_downloads(env, monkeypatch, offline_var, value):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(offline_var, value)
    assert hub.hf_offline()
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve_model_dir()
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve_model_dir("someone/absent-model")


def test_download_false_never_downloads(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.hf_offline()
    with pytest.raises(ModelNotFoundError, match="downloading is disabled"):
        resolve_model_dir(download=False)


def test_without_hub_not_in_cache(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ModelNotFoundError, match="huggingface_hub is not installed.*pip install 'voxtral\\[hub\\]'"):
        resolve_model_dir()


def test_download_command_follows_installed_hub(monkeypatch):
    """`hf download` from huggingface_hub 0.34 on (the only CLI from 1.0);
    `huggingface-cli download` before; `hf` after `pip install` when absent."""
    import types

    for version, cli in (("2.4.0", "hf"), ("1.0.0rc1", "hf"), ("0.34.1", "hf"), ("0.23.4", "huggingface-cli")):
        monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(__version__=version))
        assert hub.download_command("a/b") == f"{cli} download a/b consolidated.safetensors params.json tekken.json"
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert hub.download_command("a/b").startswith("hf download a/b")
    assert hub._howto("a/b").startswith("get it with `pip install 'voxtral[hub]'` then `hf download a/b")


def test_installed_hub_has_the_named_command():
    """The command named in the message exists in the installed huggingface_hub."""
    pytest.importorskip("huggingface_hub")
    import importlib.metadata as md

    scripts = {ep.name for ep in md.distribution("huggingface_hub").entry_points if ep.group == "console_scripts"}
    assert hub.download_command().split()[0] in scripts, scripts


def test_download_online_is_called_with_native_patterns(env, monkeypatch, tmp_path):
    """Online and not cached: snapshot_download is called with the native files only;
    a fake implementation 'downloads' into the fake cache."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    cache, _ = env
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    seen = []

    def fake_snapshot_download(repo_id, **kw):
        seen.append((repo_id, kw))
        if kw.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(fake_cache(Path(kw["cache_dir"]), NATIVE, repo=repo_id))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    got = resolve_model_dir(progress=False)
    assert detect_layout(got) == "native"
    online = [kw for _, kw in seen if not kw.get("local_files_only")]
    assert len(online) == 1
    assert sorted(online[0]["allow_patterns"]) == sorted(NATIVE)
    assert Path(online[0]["cache_dir"]) == cache
    # progress bars re-enabled afterwards
    from huggingface_hub.utils import are_progress_bars_disabled

    assert not are_progress_bars_disabled()


def test_download_failure_becomes_model_not_found(env, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def failing(repo_id, **kw):
        if kw.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        raise ConnectionError("Name or service not known\nmore details")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(ModelNotFoundError, match="download failed.*ConnectionError.*`hf download") as ei:
        resolve_model_dir()
    assert "\n" not in str(ei.value)


def test_explicit_dir_without_layout(tmp_path, env):
    d = write_files(tmp_path / "weird", ["params.json", "notes.txt"])
    with pytest.raises(ModelNotFoundError) as ei:
        resolve_model_dir(d)
    msg = str(ei.value)
    assert str(d) in msg
    assert "consolidated.safetensors" in msg and "tekken.json" in msg and "config.json" in msg
    assert "params.json" not in msg.split("lacks")[1].split("and")[0]
    with pytest.raises(ModelNotFoundError, match="lacks"):
        detect_layout(d)


def test_explicit_missing_path(tmp_path, env):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_dir(tmp_path / "absent" / "dir")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_dir("./models/voxtral")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "absent")


def test_explicit_file_instead_of_dir(tmp_path, env):
    f = write_files(tmp_path / "m", NATIVE) / "params.json"
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        resolve_model_dir(f)


def test_repo_id_detection():
    assert hub._looks_like_repo_id("mistralai/Voxtral-Mini-4B-Realtime-2602")
    assert hub._looks_like_repo_id("a/b.c_d-e")
    for bad in ("/abs/path", "a/b/c", "noslash", "../x", "a/..", "~/x", "a /b", ""):
        assert not hub._looks_like_repo_id(bad), bad
