#!/usr/bin/env bash
# Set up ssl-bench in ./.venv: the pinned dependencies (constraints.txt), ssl-bench itself in
# editable mode with the test tools and the experiment trackers (the tests read their logs back),
# and the offline default dataset (Fashion-MNIST, a Debian package).
# Idempotent: a second run only checks. Use PYTHON=python3.12 to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
stamp=.venv/.ssl-bench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "setup: installing dependencies (pinned by constraints.txt)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,tensorboard,wandb,mlflow]'
    touch "$stamp"
fi

# Fashion-MNIST, the offline default dataset: Debian ships the original files.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "setup: installing the Fashion-MNIST files (apt-get install dataset-fashion-mnist)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
            echo "setup: could not install dataset-fashion-mnist; the tests do not need it" >&2
    else
        echo "setup: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist' for the demo" >&2
    fi
fi
echo "setup: ready (.venv/bin/ssl-bench)"
