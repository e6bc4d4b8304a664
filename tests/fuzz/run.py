"""Run one fuzz target under atheris (libFuzzer), with coverage of the granary package.

    python -m tests.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR ...]

The target's seeds are written into the first corpus folder before the run
(libFuzzer adds the inputs it finds there too). Exit status 0: no input made
the target raise anything but its declared error; otherwise libFuzzer prints
the exception and saves the input as crash-* (see -artifact_prefix).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["granary"]):
    from tests.fuzz.targets import SEEDS, TARGETS


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{'|'.join(TARGETS)}}} [libFuzzer args]")
    name, options = argv[1], argv[2:]
    corpora = [arg for arg in options if not arg.startswith("-")]
    if corpora:
        folder = Path(corpora[0])
        folder.mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(SEEDS[name]):
            (folder / f"seed-{number}").write_bytes(seed)
    atheris.Setup([argv[0], *options], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
