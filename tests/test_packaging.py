"""The package as users get it: a wheel with everything inside the ssl_bench namespace, and a
command line whose --help imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["", "run", "tune", "methods", "datasets", "table", "status", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_neither_torch_nor_submitit(command):
    args = [command, "--help"] if command else ["--help"]
    probe = (
        "import sys\nfrom ssl_bench.launch.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'submitit', 'numpy', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "usage: ssl-bench" in out and out.strip().endswith("[]"), out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("ssl_bench-*.whl")
    return path


def test_wheel_holds_only_the_ssl_bench_namespace_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"ssl_bench"}
    for required in (
        "ssl_bench/methods/vicreg.py",
        "ssl_bench/experiments/recipes/cifar.toml",
        "ssl_bench/experiments/recipes/imagenet.toml",
        "ssl_bench/experiments/recipes/fashion_mnist.toml",
        "ssl_bench/experiments/published.csv",
    ):
        assert required in names
    # Every subpackage of the source tree is in the wheel.
    for init in (ROOT / "ssl_bench").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names


def test_installed_wheel_runs_methods_and_table(wheel, tmp_path):
    """A fresh virtual environment with the wheel (not editable): its dependencies come from this
    environment's site-packages, ssl-bench itself only from the wheel."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    where = subprocess.run(
        [str(python), "-c", "import ssl_bench, ssl_bench.methods; print(ssl_bench.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(site))
    for generic in ("methods", "experiments"):
        found = subprocess.run([str(python), "-c", f"import {generic}"], capture_output=True, cwd=tmp_path)
        assert found.returncode != 0, f"the wheel installed a top-level {generic!r} package"

    ssl_bench = env / "bin" / "ssl-bench"
    methods = subprocess.run([str(ssl_bench), "methods"], capture_output=True, text=True, cwd=tmp_path)
    assert methods.returncode == 0 and "| cifar " in methods.stdout and "tico" in methods.stdout
    table = subprocess.run(
        [
            str(ssl_bench),
            "table",
            str(ROOT / "results" / "fashion-mnist-demo"),
            "--output-dir",
            str(tmp_path / "table"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert table.returncode == 0 and "| vicreg " in table.stdout, table.stderr
    assert (tmp_path / "table" / "table.md").read_text() == (
        ROOT / "results" / "fashion-mnist-demo" / "table.md"
    ).read_text()
    # The published numbers ship inside the wheel: a group that has some shows them.
    published = subprocess.run(
        [
            str(python),
            "-c",
            "from ssl_bench.report.table import PUBLISHED_CSV, load_published; "
            "print(PUBLISHED_CSV); print(len(load_published()))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    path, count = published.stdout.split()
    assert path.startswith(str(site)) and int(count) > 10
