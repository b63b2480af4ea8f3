"""Runs the first Python example of README.md (its *Python* section) as it stands, one
statement at a time, and prints the seconds of each statement that takes longer than a
second: what a new user waits for each line. The README quotes the figures::

    python benchmarks/readme_example.py
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def first_python_block(text: str, section: str = "## Python") -> str:
    """The first ```python block after the heading ``section``."""
    start = text.find(f"\n{section}\n")
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S) if start >= 0 else None
    if match is None:
        raise SystemExit(f"no python block under {section!r} in {README}")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    source = first_python_block(README.read_text())
    namespace: dict = {"__name__": "readme_example"}
    timings = []
    for statement in ast.parse(source).body:
        code = ast.get_source_segment(source, statement)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # what the block prints; stdout is for the JSON
            exec(compile(ast.Module([statement], []), "README.md", "exec"), namespace)
        seconds = time.perf_counter() - start
        if seconds > 1:
            first_line = code.splitlines()[0]
            timings.append({"statement": first_line, "seconds": round(seconds, 1)})
            print(f"{seconds:7.1f} s  {first_line}", file=sys.stderr, flush=True)
    import platform

    import torch

    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}"
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine,
                      "command": "python benchmarks/readme_example.py", "statements": timings}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
