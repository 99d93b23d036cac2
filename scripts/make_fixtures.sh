#!/usr/bin/env bash
# Regenerate the parity fixtures under tests/fixtures/ from PyTorch references.
# Makes its own virtual environment (.venv-fixtures, or $FIXTURE_VENV) with torch, open_clip_torch,
# transformers and OpenAI's tokenizer from PyPI, then runs scripts/make_fixtures.py.
# Not needed to run the tests: the fixtures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FIXTURE_VENV:-.venv-fixtures}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch open_clip_torch transformers ftfy regex safetensors numpy
    # OpenAI's CLIP package (for its tokenizer); its pinned deps are already satisfied above.
    "$VENV/bin/pip" install -q --no-deps openai-clip
    "$VENV/bin/pip" install -q "setuptools<81"  # openai-clip imports pkg_resources
fi
"$VENV/bin/python" scripts/make_fixtures.py tests/fixtures
du -sh tests/fixtures
