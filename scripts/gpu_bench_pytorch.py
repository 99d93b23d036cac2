"""The PyTorch side of scripts/gpu_bench.sh, on a CUDA GPU: open_clip's CLIP built from
clipforge's JSON config; times the training step (forward + symmetric InfoNCE + backward +
AdamW) and image encoding, each timed with CUDA synchronisation, median of STEPS runs after
WARMUP. Also measures the card's dense bf16 matrix-product rate (8192³), the ceiling MFU is
quoted against. Prints one JSON object per line.

usage: gpu_bench_pytorch.py CONFIG.json BATCH STEPS WARMUP
"""
import json
import statistics
import sys
import time

import torch

from torch_clip import adamw, build, random_batch, train_step


def timed(warmup, runs, f):
    for _ in range(warmup):
        f()
    torch.cuda.synchronize()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def matmul_ceiling():
    """Median TFLOP/s of a bf16 8192×8192×8192 product on random data."""
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    s = timed(3, 10, lambda: a @ b)
    return 2 * n**3 / s / 1e12


def flops(cfg, batch):
    """Forward FLOPs of both towers at 2 per multiply-add (as clip::flops)."""
    def tower(t, w, h, layers):
        return layers * (2 * t * w * 3 * w + 4 * t * t * w + 2 * t * w * w + 4 * t * w * h)
    v, x, e = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]
    g = v["image_size"] // v["patch_size"]
    img = (2 * g * g * 3 * v["patch_size"] ** 2 * v["width"]
           + tower(g * g + 1, v["width"], int(v["width"] * v.get("mlp_ratio", 4.0)), v["layers"])
           + 2 * v["width"] * e)
    txt = (tower(x["context_length"], x["width"], int(x["width"] * x.get("mlp_ratio", 4.0)), x["layers"])
           + 2 * x["width"] * e)
    return img, 3 * (batch * (img + txt) + 2 * batch * batch * e)


def main():
    cfg_path, batch, steps, warmup = sys.argv[1], *map(int, sys.argv[2:5])
    torch.manual_seed(0)
    cfg = json.load(open(cfg_path))
    print(json.dumps({"engine": f"pytorch {torch.__version__}", "gpu": torch.cuda.get_device_name(),
                      "bf16_matmul_tflops": matmul_ceiling()}), flush=True)
    img_flops, step_flops = flops(cfg, batch)
    images, ids = random_batch(cfg, batch, "cuda")

    # (precision, tf32): f32 as clipforge's step; open_clip's default training is amp_bf16.
    for precision, tf32 in [("f32", False), ("f32", True), ("amp_bf16", True)]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        model = build(cfg, "cuda")
        opt = adamw(model)
        amp = precision == "amp_bf16"
        step = train_step(model, opt, images, ids, autocast_bf16=amp)

        model.train()
        s = timed(warmup, steps, step)
        model.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            e = timed(warmup, steps, lambda: model.encode_image(images))
        print(json.dumps({
            "engine": f"pytorch {torch.__version__}", "precision": precision, "tf32": tf32,
            "batch_size": batch, "train_step_s_median": s, "train_samples_per_s": batch / s,
            "train_tflops": step_flops / s / 1e12, "image_encode_per_s": batch / e,
            "image_encode_tflops": batch * img_flops / e / 1e12,
        }), flush=True)
        del model, opt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
