"""Coverage-guided fuzzing of everything that reads user input (atheris).

``python -m fuzz TARGET --runs N`` (see ``python -m fuzz --help``); the
targets are in :mod:`fuzz.targets`, the seed inputs in ``fuzz/corpus/``.
"""
