"""What both PyTorch benchmark scripts share: open_clip's CLIP built from one of clipforge's
JSON configs, a random batch of its shape, AdamW with open_clip's parameter groups, and one
training step (forward, symmetric InfoNCE, backward, AdamW)."""
import torch
import torch.nn.functional as F
from open_clip.model import CLIP


def build(cfg, device="cpu"):
    """open_clip's CLIP for a clipforge config dict (clipforge's own head keys left out)."""
    vision = {k: v for k, v in cfg["vision_cfg"].items() if not k.startswith("proj_")}
    text = {k: v for k, v in cfg["text_cfg"].items() if not k.startswith("proj_")}
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=vision, text_cfg=text,
                quick_gelu=cfg.get("quick_gelu", False)).to(device)


def random_batch(cfg, batch, device="cpu"):
    """Images [B, 3, S, S] and token ids [B, T] with start and end-of-text tokens in place."""
    size, ctx = cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"]
    vocab = cfg["text_cfg"]["vocab_size"]
    images = torch.randn(batch, 3, size, size, device=device)
    ids = torch.randint(1, vocab - 2, (batch, ctx), device=device)
    ids[:, 0] = vocab - 2
    ids[:, ctx // 2] = vocab - 1  # end of text: the largest id
    ids[:, ctx // 2 + 1:] = 0
    return images, ids


def adamw(model):
    """open_clip's groups: weight decay on weights (2-D, not embeddings) only."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.2},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=1e-4, betas=(0.9, 0.98), eps=1e-6)


def train_step(model, opt, images, ids, autocast_bf16=False):
    """A closure running one training step (under bf16 autocast if asked, as open_clip's amp_bf16)."""
    labels = torch.arange(images.shape[0], device=images.device)

    def step():
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            img = F.normalize(model.encode_image(images), dim=-1)
            txt = F.normalize(model.encode_text(ids), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.t()
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def quantize_int8(model):
    """PyTorch's dynamic int8 quantisation of every nn.Linear of `model` (a copy), ready to
    encode: open_clip asks a block's c_fc for its weight dtype, which a quantised Linear has as
    a method, so the towers' inputs are told to stay f32."""
    import warnings
    warnings.filterwarnings("ignore")  # quantize_dynamic's deprecation notices
    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    q.transformer.get_cast_dtype = lambda: torch.float32
    return q
