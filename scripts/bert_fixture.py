"""Parity fixture for clipforge's BERT text tower (crates/clip/src/bert.rs): a Hugging Face
`transformers` `BertModel` shaped like all-MiniLM-L6-v2 but small (width 32, 2 layers, 4 heads,
vocabulary 1,000), seeded random weights, five texts of different lengths padded to the
longest. Saves the weights (HF keys), ids, attention mask, the last layer's rows, the
sentence-transformers mean pooling and the CLS row, and the gradient of a fixed projection of
the mean-pooled features with respect to a slice of the weights.

    .venv-fixtures/bin/python scripts/bert_fixture.py tests/fixtures   # scripts/venv.sh makes it
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
torch.manual_seed(0)
cfg = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
           intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
           layer_norm_eps=1e-12, hidden_act="gelu")
model = BertModel(BertConfig(**cfg, attn_implementation="eager"), add_pooling_layer=False).eval()
with torch.no_grad():
    for p in model.parameters():  # larger than BERT's init, so that every layer matters
        p.normal_(0.0, 0.2)

lengths = [5, 12, 3, 9, 12]
T = max(lengths)
gen = torch.Generator().manual_seed(1)
ids = torch.zeros(len(lengths), T, dtype=torch.long)
mask = torch.zeros(len(lengths), T, dtype=torch.long)
for i, n in enumerate(lengths):
    ids[i, :n] = torch.randint(1, cfg["vocab_size"], (n,), generator=gen)
    ids[i, 0], ids[i, n - 1] = 101, 102  # [CLS] … [SEP], as a WordPiece tokenizer writes
    mask[i, :n] = 1

hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, W]
m = mask.unsqueeze(-1).float()
mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # sentence-transformers' Pooling
cls = hidden[:, 0]
probe = torch.randn(cfg["hidden_size"], 8, generator=gen)
loss = (mean @ probe).square().sum()
loss.backward()
graded = ["encoder.layer.1.attention.self.query.weight", "encoder.layer.0.output.dense.weight",
          "embeddings.word_embeddings.weight", "encoder.layer.1.output.LayerNorm.weight"]
params = dict(model.named_parameters())

out = {f"weights.{k}": v.detach().contiguous() for k, v in params.items()}
out.update({
    "ids": ids.to(torch.int64), "mask": mask.to(torch.int64),
    "hidden": hidden.detach(), "mean": mean.detach(), "cls": cls.detach(), "probe": probe,
    "loss": loss.detach().reshape(1),
})
for k in graded:
    out[f"grad.{k}"] = params[k].grad.detach().contiguous()
save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "bert.safetensors"))
with open(os.path.join(OUT, "bert.json"), "w") as f:
    json.dump({"config": cfg, "graded": graded, "lengths": lengths}, f, indent=1)
print("bert:", {k: tuple(v.shape) for k, v in out.items() if not k.startswith("weights.")})
