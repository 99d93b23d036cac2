"""Write tests/fixtures/adamw.json: three steps of PyTorch's torch.optim.AdamW on two
parameters in open_clip's two groups (a weight that decays, a bias that does not), with fixed
gradients and a changing learning rate: the reference for clip-train's AdamW
(crates/clip-train/src/optim.rs). Run with the fixture venv's python (scripts/venv.sh)."""
import json
import sys

import torch

torch.manual_seed(3)
w = torch.nn.Parameter(torch.randn(3, 4))
b = torch.nn.Parameter(torch.randn(4))
start = {"w": w.detach().clone(), "b": b.detach().clone()}
opt = torch.optim.AdamW(
    [{"params": [w], "weight_decay": 0.2}, {"params": [b], "weight_decay": 0.0}],
    lr=1e-2, betas=(0.9, 0.98), eps=1e-6,
)
lrs = [1e-2, 5e-3, 2e-3]
steps = []
for lr in lrs:
    gw, gb = torch.randn(3, 4) * 0.5, torch.randn(4) * 1e-3  # one large, one tiny (ε matters)
    for g in opt.param_groups:
        g["lr"] = lr
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    steps.append({"lr": lr, "grad_w": gw.tolist(), "grad_b": gb.tolist(),
                  "w": w.detach().tolist(), "b": b.detach().tolist()})
out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/adamw.json"
json.dump({"source": f"torch {torch.__version__} torch.optim.AdamW(betas=(0.9, 0.98), eps=1e-6), "
           "weight decay 0.2 on w, 0 on b",
           "w0": start["w"].tolist(), "b0": start["b"].tolist(), "steps": steps}, open(out, "w"))
print(f"{out}: {len(steps)} steps")
