"""The PyTorch side of scripts/bench_vs_pytorch.sh: the same model (open_clip's CLIP built from
clipforge's JSON config), batch and thread count; times the training step (forward + symmetric
InfoNCE + backward + AdamW), image and text encoding (inference mode), and OpenAI's Python
tokenizer. Prints one JSON object with the keys of `clipforge bench --json`, plus the same
model figures under bf16 autocast (`*_bf16`: `torch.autocast("cpu", torch.bfloat16)`, PyTorch's
fastest CPU mode where the CPU has AMX or AVX512-BF16), encoding under dynamic int8 quantisation
(`*_int8`: `quantize_dynamic(model, {nn.Linear}, torch.qint8)`) and the CPU's bf16/int8 flags.

usage: bench_pytorch.py CONFIG.json BATCH STEPS WARMUP THREADS
"""
import json
import random
import statistics
import sys
import time

import torch

from torch_clip import adamw, build, quantize_int8, random_batch, train_step


def timed(warmup, runs, f):
    for _ in range(warmup):
        f()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


def captions(n):
    """Captions in the grammar of clipforge's built-in scenes."""
    rng = random.Random(1)
    shapes = "circle square triangle star cross ring moon heart".split()
    colours = "red green blue yellow purple orange pink cyan".split()
    obj = lambda: f"{rng.choice(['small', 'large'])} {rng.choice(colours)} {rng.choice(shapes)}"
    forms = ["a {} to the left of a {}", "a {} above a {}", "a picture of a {}", "there is a {}"]
    return [rng.choice(forms).format(obj(), obj()) for _ in range(n)]


def main():
    cfg_path, batch, steps, warmup, threads = sys.argv[1], *map(int, sys.argv[2:6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = json.load(open(cfg_path))
    model = build(cfg)
    images, ids = random_batch(cfg, batch)
    step = train_step(model, adamw(model), images, ids)

    model.train()
    train = timed(warmup, steps, step)
    model.eval()
    with torch.inference_mode():
        img = timed(warmup, steps, lambda: model.encode_image(images))
        txt = timed(warmup, steps, lambda: model.encode_text(ids))
    # Encoding with every nn.Linear dynamically quantised to int8 (fbgemm / oneDNN kernels).
    qmodel = quantize_int8(model)
    with torch.inference_mode():
        img_int8 = timed(warmup, steps, lambda: qmodel.encode_image(images))
        txt_int8 = timed(warmup, steps, lambda: qmodel.encode_text(ids))
    del qmodel
    # The same under bf16 autocast, from the same starting weights.
    torch.manual_seed(0)
    model = build(cfg)
    step_bf16 = train_step(model, adamw(model), images, ids, autocast_bf16=True)
    model.train()
    train_bf16 = timed(warmup, steps, step_bf16)
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        img_bf16 = timed(warmup, steps, lambda: model.encode_image(images))
        txt_bf16 = timed(warmup, steps, lambda: model.encode_text(ids))
    # Encoders with their weights converted to bf16 (`model.bfloat16()`): no casts per call,
    # faster than autocast for inference where oneDNN runs bf16 products.
    model.bfloat16()
    with torch.inference_mode():
        img_bf16w = timed(warmup, steps, lambda: model.encode_image(images.bfloat16()))
        txt_bf16w = timed(warmup, steps, lambda: model.encode_text(ids))

    from clip.simple_tokenizer import SimpleTokenizer
    tok = SimpleTokenizer()
    caps = captions(4096)
    tk = timed(1, max(1, min(steps, 3)), lambda: [tok.encode(c) for c in caps])

    med = statistics.median(train)
    print(json.dumps({
        "engine": f"pytorch {torch.__version__}",
        "batch_size": batch, "threads": torch.get_num_threads(), "steps": steps,
        "train_step_s_median": med, "train_step_s_min": min(train),
        "train_samples_per_s": batch / med,
        "image_encode_per_s": batch / statistics.median(img),
        "text_encode_per_s": batch / statistics.median(txt),
        "tokenizer_per_s": len(caps) / statistics.median(tk),
        "train_step_s_median_bf16": statistics.median(train_bf16),
        "image_encode_per_s_bf16": batch / statistics.median(img_bf16),
        "text_encode_per_s_bf16": batch / statistics.median(txt_bf16),
        "image_encode_per_s_bf16_weights": batch / statistics.median(img_bf16w),
        "text_encode_per_s_bf16_weights": batch / statistics.median(txt_bf16w),
        "image_encode_per_s_int8": batch / statistics.median(img_int8),
        "text_encode_per_s_int8": batch / statistics.median(txt_int8),
        "quantized_engine": torch.backends.quantized.engine,
        "cpu_flags": bf16_flags(),
    }))


def bf16_flags():
    """The CPU's bf16 and int8 matrix features, from /proc/cpuinfo."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return ""
    return " ".join(f for f in ("avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags)


if __name__ == "__main__":
    main()
