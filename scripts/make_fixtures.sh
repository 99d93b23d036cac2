#!/usr/bin/env bash
# Regenerate the parity fixtures under tests/fixtures/ from PyTorch references.
# Makes its own virtual environment (.venv-fixtures, or $FIXTURE_VENV) with torch, open_clip_torch,
# transformers and OpenAI's tokenizer from PyPI, then runs scripts/make_fixtures.py.
# Not needed to run the tests: the fixtures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
"$VENV/bin/python" scripts/make_fixtures.py tests/fixtures
"$VENV/bin/python" scripts/adamw_fixture.py tests/fixtures/adamw.json
"$VENV/bin/python" scripts/loss_fixture.py tests/fixtures
"$VENV/bin/python" scripts/bert_fixture.py tests/fixtures
"$VENV/bin/python" scripts/dinov2_fixture.py tests/fixtures
# The real towers' check needs them fetched: clipforge model fetch minilm-l6 (and dinov2-s14).
if [ -d models/minilm-l6 ] && [ -d models/dinov2-s14 ]; then
    "$VENV/bin/python" scripts/pretrained_check.py models tests/fixtures
fi
du -sh tests/fixtures
