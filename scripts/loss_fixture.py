"""Write tests/fixtures/losses.safetensors (+ .json): open_clip's ClipLoss and SigLipLoss on fixed
L2-normalised embeddings, with the gradients of each loss with respect to the image and text
embeddings, the logit scale (log-space, as the model stores it) and SigLIP's bias. The reference
for crates/clip/src/loss.rs. Run with the fixture venv's python (scripts/venv.sh)."""
import json
import math
import sys

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss
from safetensors.torch import save_file

torch.manual_seed(11)
out = {}
cases = []
# (name, N, E, log scale, bias): SigLIP's own init (t' = log 10, b = -10), a trained-looking
# temperature (scale 100 = CLIP's clamp) and a batch of one (no negatives at all).
for name, n, e, t, b in [("init", 6, 8, math.log(10.0), -10.0),
                         ("sharp", 5, 4, math.log(100.0), -3.0),
                         ("single", 1, 4, math.log(10.0), -10.0)]:
    img = F.normalize(torch.randn(n, e), dim=-1).requires_grad_(True)
    txt = F.normalize(torch.randn(n, e), dim=-1)
    txt[: n // 2] = F.normalize(txt[: n // 2] + img[: n // 2].detach(), dim=-1)  # some true pairs agree
    txt = txt.detach().requires_grad_(True)
    scale = torch.tensor(t, requires_grad=True)
    bias = torch.tensor(b, requires_grad=True)
    sig = SigLipLoss()(img, txt, scale.exp(), bias)
    g_img, g_txt, g_scale, g_bias = torch.autograd.grad(sig, [img, txt, scale, bias])
    out[f"{name}.image"] = img.detach()
    out[f"{name}.text"] = txt.detach()
    out[f"{name}.logit_scale"] = scale.detach().reshape(1)
    out[f"{name}.logit_bias"] = bias.detach().reshape(1)
    out[f"{name}.siglip.loss"] = sig.detach().reshape(1)
    out[f"{name}.siglip.grad_image"] = g_img
    out[f"{name}.siglip.grad_text"] = g_txt
    out[f"{name}.siglip.grad_logit_scale"] = g_scale.reshape(1)
    out[f"{name}.siglip.grad_logit_bias"] = g_bias.reshape(1)
    clip = ClipLoss()(img, txt, scale.exp())
    g_img, g_txt, g_scale = torch.autograd.grad(clip, [img, txt, scale])
    out[f"{name}.clip.loss"] = clip.detach().reshape(1)
    out[f"{name}.clip.grad_image"] = g_img
    out[f"{name}.clip.grad_text"] = g_txt
    out[f"{name}.clip.grad_logit_scale"] = g_scale.reshape(1)
    cases.append(name)
    print(f"{name}: N={n} siglip {sig.item():.6f} clip {clip.item():.6f}")

dest = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
save_file({k: v.contiguous() for k, v in out.items()}, f"{dest}/losses.safetensors")
json.dump({"source": f"open_clip {open_clip.__version__} loss.ClipLoss, loss.SigLipLoss; "
           f"torch {torch.__version__}", "cases": cases}, open(f"{dest}/losses.json", "w"))
