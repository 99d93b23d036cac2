"""The residual block's matrix products on one thread in OpenBLAS (numpy) and MKL (PyTorch):
GFLOP/s per product, best of several runs, as CSV. See scripts/gemm_weigh.sh."""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
r = int(sys.argv[1]) if len(sys.argv) > 1 else 260
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def best(f):
    f()
    out = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - t)
    return out


print("engine,preset,weight,product,gflops")
for preset, w, h in [("tiny", 128, 512), ("small", 384, 1536)]:
    for name, din, dout in [("in_proj", w, 3 * w), ("out_proj", w, w), ("c_fc", w, h), ("c_proj", h, w)]:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((r, din), dtype=np.float32)
        dy = rng.standard_normal((r, dout), dtype=np.float32)
        wt = rng.standard_normal((dout, din), dtype=np.float32)
        flop = 2.0 * r * din * dout
        y, dx, dw = np.empty((r, dout), np.float32), np.empty((r, din), np.float32), np.empty((dout, din), np.float32)
        for engine, prods in [
            ("OpenBLAS (numpy)", [
                ("y = x·Wᵀ", lambda: np.matmul(x, wt.T, out=y)),
                ("dx = dy·W", lambda: np.matmul(dy, wt, out=dx)),
                ("dW += dyᵀ·x", lambda: np.add(dw, dy.T @ x, out=dw)),
            ]),
            ("MKL (PyTorch)", [
                ("y = x·Wᵀ", lambda tx=torch.from_numpy(x), tw=torch.from_numpy(wt), ty=torch.from_numpy(y): torch.mm(tx, tw.t(), out=ty)),
                ("dx = dy·W", lambda td=torch.from_numpy(dy), tw=torch.from_numpy(wt), tdx=torch.from_numpy(dx): torch.mm(td, tw, out=tdx)),
                ("dW += dyᵀ·x", lambda td=torch.from_numpy(dy), tx=torch.from_numpy(x), tdw=torch.from_numpy(dw): tdw.addmm_(td.t(), tx)),
            ]),
        ]:
            with torch.inference_mode():
                for product, f in prods:
                    print(f"{engine},{preset},{name},{product},{flop / best(f) / 1e9:.1f}")
