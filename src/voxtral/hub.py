"""Finding the model directory: ``--model``, ``VOXTRAL_MODEL_DIR``, the Hugging
Face cache, or (once, online) a download.

Two layouts are recognised:

- ``native`` (Mistral): ``consolidated.safetensors`` + ``params.json`` + ``tekken.json``;
- ``hf`` (transformers): ``config.json`` + ``model*.safetensors`` or
  ``model.safetensors.index.json``;
- ``gguf`` (quantized, written by ``python -m voxtral quantize``):
  ``model.gguf`` + ``tekken.json``.

``huggingface_hub`` is optional (the ``voxtral[hub]`` extra). Without it the
standard cache layout is read directly:
``$HF_HUB_CACHE`` (or ``$HF_HOME/hub``, or ``~/.cache/huggingface/hub``)
``/models--mistralai--Voxtral-Mini-4B-Realtime-2602/refs/main`` -> ``snapshots/<hash>/``.
Nothing is downloaded when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Union

from .errors import ModelNotFoundError
from .layout import NATIVE_FILES, detect_layout, layout_or_none

__all__ = [
    "DEFAULT_REPO",
    "ENV_MODEL_DIR",
    "NATIVE_FILES",
    "HF_FILES_PATTERNS",
    "resolve_model_dir",
    "hf_cache_dir",
    "hf_offline",
    "find_in_cache",
    "download_command",
]

DEFAULT_REPO = "mistralai/Voxtral-Mini-4B-Realtime-2602"
ENV_MODEL_DIR = "VOXTRAL_MODEL_DIR"
HF_FILES_PATTERNS = (
    "config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "tekken.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer*",
)

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "ON", "YES", "TRUE"}

PathArg = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------
# Environment


def hf_offline() -> bool:
    """True if HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to 1/true/yes/on."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        v = os.environ.get(var)
        if v and v.strip().upper() in _TRUE:
            return True
    return False


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import):
    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        v = os.environ.get(var)
        if v:
            return Path(os.path.expandvars(v)).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _hub_module():
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub


def _looks_like_repo_id(s: str) -> bool:
    return bool(_REPO_ID_RE.match(s)) and ".." not in s


# ---------------------------------------------------------------------------
# Cache lookup


def _scan_cache(repo: str, cache: Path) -> Path | None:
    """Read the standard cache layout directly: refs/main first, then any other
    snapshot (newest first) that holds a complete layout."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snaps = root / "snapshots"
    if not snaps.is_dir():
        return None
    candidates: list[Path] = []
    ref = root / "refs" / "main"
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        commit = ""
    if commit and "/" not in commit and "\\" not in commit and commit not in (".", ".."):
        candidates.append(snaps / commit)
    try:
        others = sorted(
            (p for p in snaps.iterdir() if p.is_dir() and p not in candidates),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        others = []
    candidates.extend(others)
    for c in candidates:
        if layout_or_none(c) is not None:
            return c
    return None


def find_in_cache(repo: str = DEFAULT_REPO, cache_dir: PathArg | None = None) -> Path | None:
    """The cached snapshot directory of ``repo`` holding a complete model
    (either layout), or None. Never touches the network."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    hub = _hub_module()
    if hub is not None:
        for patterns in (list(NATIVE_FILES), list(HF_FILES_PATTERNS)):
            try:
                path = hub.snapshot_download(
                    repo,
                    cache_dir=str(cache),
                    local_files_only=True,
                    allow_patterns=patterns,
                )
            except Exception:  # noqa: BLE001  LocalEntryNotFoundError, IncompleteSnapshotError, bad repo id...
                continue
            if path and layout_or_none(Path(path)) is not None:
                return Path(path)
    return _scan_cache(repo, cache)


# ---------------------------------------------------------------------------
# Download


def _hub_version(hub) -> tuple[int, int]:
    parts = str(getattr(hub, "__version__", "0.0")).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except ValueError:
        return (0, 0)


def download_command(repo: str = DEFAULT_REPO) -> str:
    """The command that downloads the model with the installed huggingface_hub:
    ``hf download`` (the CLI since 0.34, the only one from 1.0), else the older
    ``huggingface-cli download``."""
    hub = _hub_module()
    cli = "hf" if hub is None or _hub_version(hub) >= (0, 34) else "huggingface-cli"
    return f"{cli} download {repo} {' '.join(NATIVE_FILES)}"


def _howto(repo: str) -> str:
    """The shortest advice that works with what is installed."""
    get = f"`{download_command(repo)}` (~9 GB)"
    if _hub_module() is None:
        get = f"`pip install 'voxtral[hub]'` then {get}"
    return f"get it with {get}, or pass --model DIR / set {ENV_MODEL_DIR}"


def _download(repo: str, cache: Path, progress: bool) -> Path:
    hub = _hub_module()
    assert hub is not None

    def fetch(patterns: list[str]) -> Path:
        return Path(hub.snapshot_download(repo, cache_dir=str(cache), allow_patterns=patterns))

    reenable = False
    if not progress:
        try:
            from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

            reenable = not are_progress_bars_disabled()
            disable_progress_bars()
        except Exception:  # noqa: BLE001  progress bars are cosmetic: never fail a download over them
            reenable = False
    try:
        try:
            path = fetch(list(NATIVE_FILES))
            if layout_or_none(path) is None and repo != DEFAULT_REPO:
                # Another repository, possibly in the transformers layout only.
                path = fetch(list(HF_FILES_PATTERNS))
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelNotFoundError(
                f"Voxtral model {repo} is not in the Hugging Face cache ({cache}) and the download failed "
                f"({type(e).__name__}: {reason}); {_howto(repo)}"
            ) from e
    finally:
        if reenable:
            try:
                from huggingface_hub.utils import enable_progress_bars

                enable_progress_bars()
            except Exception:  # noqa: BLE001  progress bars are cosmetic (as above)
                pass
    if layout_or_none(path) is None:
        raise ModelNotFoundError(
            f"downloaded {repo} to {path} but it holds no complete Voxtral model "
            f"(neither {', '.join(NATIVE_FILES)} nor config.json + model*.safetensors)"
        )
    return path


def _from_repo(repo: str, *, download: bool, progress: bool, origin: str) -> Path:
    cache = hf_cache_dir()
    found = find_in_cache(repo, cache)
    if found is not None:
        return found
    hub = _hub_module()
    if download and not hf_offline() and hub is not None:
        return _download(repo, cache, progress)
    if not download:
        why = "downloading is disabled"
    elif hf_offline():
        why = "offline mode (HF_HUB_OFFLINE) is set"
    else:
        why = "huggingface_hub is not installed"
    raise ModelNotFoundError(
        f"Voxtral model not found: {origin}{repo} is not in the Hugging Face cache ({cache}) and {why}; {_howto(repo)}"
    )


# ---------------------------------------------------------------------------
# Entry point


def resolve_model_dir(
    model: PathArg | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Find the model directory.

    Order: ``model`` (an existing directory, or a Hugging Face repo id
    ``owner/name`` when no such directory exists), else ``$VOXTRAL_MODEL_DIR``,
    else the Hugging Face cache for :data:`DEFAULT_REPO`, else (if ``download``,
    not offline, and huggingface_hub is installed) a download of the native
    files with progress bars (``progress``). Returns the directory; raises
    :class:`ModelNotFoundError` with instructions otherwise. Use
    :func:`detect_layout` on the result to know which layout it holds.
    """
    if model is not None and os.fspath(model) != "":
        raw = os.fspath(model)
        if isinstance(raw, bytes):
            raw = raw.decode(errors="replace")
        p = Path(raw).expanduser()
        if p.exists():
            detect_layout(p)
            return p.resolve()
        if _looks_like_repo_id(raw) and not raw.startswith(("./", "../", "~")):
            return _from_repo(raw, download=download, progress=progress, origin="--model ")
        raise ModelNotFoundError(f"model directory {raw} does not exist")

    env = os.environ.get(ENV_MODEL_DIR, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise ModelNotFoundError(f"{ENV_MODEL_DIR}={env} is not a directory")
        try:
            detect_layout(p)
        except ModelNotFoundError as e:
            raise ModelNotFoundError(f"{ENV_MODEL_DIR}: {e}") from None
        return p.resolve()

    return _from_repo(DEFAULT_REPO, download=download, progress=progress, origin="")
