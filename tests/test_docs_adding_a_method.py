"""docs/adding-a-method.md runs as written, so the walk-through cannot rot.

Its fenced blocks, in order, in one scratch directory: ```python file=PATH``` blocks are saved at
PATH, ```bash``` blocks run with bash -euo pipefail, plain ```python``` blocks run as scripts;
other blocks (toml, console, text) are illustrations and are not run. ``ssl-bench`` is the one
of this environment, and ``data/`` holds the generated Fashion-MNIST-format test dataset.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "adding-a-method.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def doc_blocks() -> list[tuple[str, str, str]]:
    """(kind, target, body) for every fenced block: kind is file, python, bash or skip."""
    blocks = []
    for match in FENCE.finditer(DOC.read_text()):
        language, *options = match.group(1).split()
        fields = dict(option.split("=", 1) for option in options if "=" in option)
        body = match.group(2)
        if language == "python" and "file" in fields:
            blocks.append(("file", fields["file"], body))
        elif language in ("python", "bash"):
            blocks.append((language, "", body))
        else:
            blocks.append(("skip", language, body))
    return blocks


def test_the_doc_has_the_blocks_this_test_runs():
    kinds = [kind for kind, _, _ in doc_blocks()]
    assert kinds.count("file") == 2 and kinds.count("python") == 3 and kinds.count("bash") == 3


@pytest.mark.slow
def test_walk_through_runs_as_written(tmp_path, fashion_root):
    (tmp_path / "data").symlink_to(fashion_root, target_is_directory=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # One intra-op thread: tiny batches gain nothing from more, and a busy machine loses a lot.
        "OMP_NUM_THREADS": "1",
    }
    for index, (kind, target, body) in enumerate(doc_blocks()):
        if kind == "file":
            path = tmp_path / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            continue
        if kind == "skip":
            continue
        command = ["bash", "-euo", "pipefail", "-c", body] if kind == "bash" else [sys.executable, "-c", body]
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (
            f"block {index} ({kind}) failed:\n{body}\n--- output:\n{proc.stdout}\n{proc.stderr}"
        )
    # The two runs finished, were evaluated and logged their loss terms.
    runs = {path.name.split("-")[0]: path for path in (tmp_path / "runs" / "fashion-mnist").iterdir()}
    assert {"align_uniform", "predict_target", "random_init"} <= set(runs)
    metrics = (runs["align_uniform"] / "metrics.jsonl").read_text()
    assert '"align"' in metrics and '"uniform"' in metrics
