"""The PyTorch side of scripts/precision_vs_pytorch.sh: open_clip's CLIP built from one of
clipforge's JSON configs (seeded open_clip initialisation), its weights and a batch of inputs
written for clipforge, and its embeddings of that batch in f32, under bf16 autocast, and after
dynamic int8 quantisation (`torch.ao.quantization.quantize_dynamic(model, {nn.Linear},
torch.qint8)`); also the encode rates of f32 and int8 at that batch.

usage: precision_pytorch.py CONFIG.json BATCH STEPS THREADS OUT_DIR
writes OUT_DIR/{weights,inputs,torch}.safetensors and prints one JSON object.
"""
import json
import statistics
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from bench_pytorch import timed
from torch_clip import build, quantize_int8, random_batch


def median_time(runs, f):
    """Median seconds of `runs` calls of f after one warm-up call."""
    return statistics.median(timed(1, runs, f))


def main():
    cfg_path, batch, steps, threads, out = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = json.load(open(cfg_path))
    model = build(cfg).eval()
    images, ids = random_batch(cfg, batch)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "attn_mask"}
    save_file(state, f"{out}/weights.safetensors")
    save_file({"images": images.contiguous(), "ids": ids.to(torch.int64).contiguous()},
              f"{out}/inputs.safetensors")

    def embed(m, autocast=False):
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            return (F.normalize(m.encode_image(images).float(), dim=-1),
                    F.normalize(m.encode_text(ids).float(), dim=-1))

    f32 = embed(model)
    bf16 = embed(model, autocast=True)
    rates = {}
    with torch.inference_mode():
        rates["image_f32"] = batch / median_time(steps, lambda: model.encode_image(images))
        rates["text_f32"] = batch / median_time(steps, lambda: model.encode_text(ids))
    q = quantize_int8(model)
    int8 = embed(q)
    with torch.inference_mode():
        rates["image_int8"] = batch / median_time(steps, lambda: q.encode_image(images))
        rates["text_int8"] = batch / median_time(steps, lambda: q.encode_text(ids))
    quantized = sum(1 for m in q.modules() if "quantized" in type(m).__module__)
    save_file({f"{name}.{tower}": t.contiguous()
               for name, pair in [("f32", f32), ("bf16", bf16), ("int8", int8)]
               for tower, t in zip(("image", "text"), pair)}, f"{out}/torch.safetensors")
    print(json.dumps({"engine": f"pytorch {torch.__version__}",
                      "quantized_engine": torch.backends.quantized.engine,
                      "quantized_linears": quantized, "threads": torch.get_num_threads(),
                      "batch": batch, **rates}))


if __name__ == "__main__":
    main()
