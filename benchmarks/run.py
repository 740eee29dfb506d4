"""Run every benchmark in one process and print their tables.

Usage: `make bench`, or `python -m benchmarks.run [TOPIC ...]` for some of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time

import torch

TOPICS = (
    "eval",
    "decode",
    "synth",
    "model",
    "backends",
    "training",
    "long_video",
    "corpus",
    "corpus_scale",
    "masks",
    "methods",
    "feed",
    "profile",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("topics", nargs="*", help=f"some of {', '.join(TOPICS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.topics) - set(TOPICS))
    if unknown:
        parser.error(f"unknown topics {unknown}; choose from {list(TOPICS)}")
    topics = args.topics or TOPICS
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    )
    for topic in topics:
        print(f"\n== {topic} ==", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.bench_{topic}").run()
        print(f"({topic}: {time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
