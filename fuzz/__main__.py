"""``python -m fuzz TARGET [--runs N] [--strict] [-- libFuzzer flags]``

Runs one target under atheris (libFuzzer) with its seed corpus; new inputs
go to ``--work DIR`` (default ``fuzz/work/TARGET``, not committed), crashes
to ``--artifacts DIR``. ``python -m fuzz --list`` names the targets;
``python -m fuzz TARGET --reproduce FILE`` runs one input outside the fuzzer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def instrument_voxtral(atheris) -> int:
    """Add coverage feedback to every function of the voxtral modules.

    atheris' import hook does not see modules loaded through the editable
    install's redirecting finder, so the functions are patched after import
    (nested functions are patched with their enclosing code)."""
    import importlib
    import pkgutil
    import types

    import voxtral

    for info in pkgutil.walk_packages(voxtral.__path__, "voxtral."):
        if info.name not in sys.modules and ".testing" not in info.name and not info.name.endswith("__main__"):
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional dependency (sounddevice...)
                pass
    count = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "voxtral" or name.startswith("voxtral.")):
            continue
        for obj in list(vars(module).values()):
            members = vars(obj).values() if isinstance(obj, type) and obj.__module__ == name else [obj]
            for m in members:
                m = getattr(m, "__func__", m)  # staticmethod / classmethod
                if isinstance(m, property):
                    m = m.fget
                if isinstance(m, types.FunctionType) and m.__module__ == name and not getattr(m, "_fuzz_done", False):
                    atheris.instrument_func(m)
                    m._fuzz_done = True
                    count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", nargs="?")
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    ap.add_argument("--runs", type=int, default=-1, help="executions (default: until stopped)")
    ap.add_argument("--seconds", type=int, default=0, help="stop after this many seconds")
    ap.add_argument("--strict", action="store_true", help="stop on known (already reported) issues too")
    ap.add_argument("--work", type=Path, help="corpus directory the fuzzer adds to (default fuzz/work/TARGET)")
    ap.add_argument("--artifacts", type=Path, default=HERE / "crashes", help="where failing inputs are written")
    ap.add_argument("--reproduce", type=Path, metavar="FILE", help="run one input and show what it raises")
    ap.add_argument("--seed", type=int, default=0, help="libFuzzer seed (0: random)")
    a = ap.parse_args(argv)

    import atheris

    from fuzz import targets

    instrument_voxtral(atheris)

    if a.list or not a.target:
        print("\n".join(f"{name:12s} {fn.__doc__.splitlines()[0]}" for name, fn in targets.TARGETS.items()))
        return 0
    if a.target not in targets.TARGETS:
        ap.error(f"unknown target {a.target!r}; choose from {', '.join(targets.TARGETS)}")
    target = targets.TARGETS[a.target]
    if a.reproduce:
        targets.run_one(target, a.reproduce.read_bytes(), strict=True)
        print("no untyped exception")
        return 0

    work = a.work or HERE / "work" / a.target
    work.mkdir(parents=True, exist_ok=True)
    a.artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-runs={a.runs}",
        f"-max_len={targets.MAX_LEN[a.target]}",
        "-timeout=20",  # seconds per input: a hang is a bug
        "-rss_limit_mb=3072",  # memory blow-ups (huge resampled lengths) are bugs too
        f"-artifact_prefix={a.artifacts}/{a.target}-",
        f"-seed={a.seed}",
        "-print_final_stats=1",
    ]
    if a.seconds:
        flags.append(f"-max_total_time={a.seconds}")
    seeds = HERE / "corpus" / a.target
    corpora = [str(work)] + ([str(seeds)] if seeds.is_dir() else [])

    def one_input(data: bytes) -> None:
        targets.run_one(target, data, strict=a.strict)

    atheris.Setup([sys.argv[0], *flags, *extra, *corpora], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
