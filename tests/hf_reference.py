"""An independent reference: the embedded Gemma in plain transformers, forward hooks on the
Hugging Face modules, no TransformerLens (run as a subprocess by tests/runtime/test_reference.py, so the
bridge cannot have touched this process: TransformerLens #1795 swaps Gemma's attention
function process-wide).

    python tests/hf_reference.py INPUT.json OUTPUT.json

INPUT: {"model_dir", "pairs": [{"clean", "corrupted", "answer", "foil"}], "heads": [[layer, head]]}
OUTPUT: {"baselines": {"clean", "corrupted"}, "head_dla": {"LxHy": mean}, "patched": {"LxHy": mean}}:
the mean logit differences, each head's direct logit attribution at the final position
(its slice of o_proj, Gemma's post-attention RMSNorm (1 + w) / rms of the layer's output,
the final RMSNorm likewise, on lm_head[answer] - lm_head[foil]), and the mean logit
difference when the head's o_proj input slice, every position, comes from the clean run
into the corrupted one (denoising).
"""
from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return (x.float().pow(2).mean(-1, keepdim=True) + eps).sqrt()


class Hooked:
    def __init__(self, model):
        self.model, self.layers = model, model.model.layers
        self.n_heads, self.d_head = model.config.num_attention_heads, model.config.head_dim
        self.kept, self.patch = {}, None

    def forward(self, ids, patch=None):
        """Logits at the last position; keeps every layer's o_proj input and output and the final residual."""
        self.kept, self.patch = {}, patch
        handles = []
        for layer, block in enumerate(self.layers):
            handles.append(block.self_attn.o_proj.register_forward_pre_hook(self._o_in(layer)))
            handles.append(block.post_attention_layernorm.register_forward_pre_hook(self._keep(f"o_out{layer}")))
        handles.append(self.model.model.norm.register_forward_pre_hook(self._keep("final")))
        try:
            with torch.no_grad():
                return self.model(torch.tensor([ids])).logits[0, -1].double()
        finally:
            for h in handles:
                h.remove()

    def _keep(self, name):
        def hook(module, args):
            self.kept[name] = args[0][0].detach()
        return hook

    def _o_in(self, layer):
        def hook(module, args):
            x = args[0]
            if self.patch is not None and self.patch[0] == layer:
                _, head, source = self.patch
                x = x.clone()
                x[0, :, head * self.d_head:(head + 1) * self.d_head] = source
            self.kept[f"o_in{layer}"] = x[0].detach()
            return (x,) + tuple(args[1:])
        return hook

    def head_slice(self, layer, head):
        return self.kept[f"o_in{layer}"][:, head * self.d_head:(head + 1) * self.d_head]

    def head_dla(self, layer, head, direction):
        block = self.layers[layer]
        z = self.head_slice(layer, head)[-1].float()
        out = block.self_attn.o_proj.weight[:, head * self.d_head:(head + 1) * self.d_head].float() @ z
        post = block.post_attention_layernorm
        out = out * (1.0 + post.weight.float()) / rms(self.kept[f"o_out{layer}"][-1], post.eps)
        final = self.model.model.norm
        out = out * (1.0 + final.weight.float()) / rms(self.kept["final"][-1], final.eps)
        return float(out.double() @ direction)


def main(source: str, target: str) -> None:
    assert "transformer_lens" not in sys.modules
    spec = json.loads(open(source).read())
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32).eval()
    hooked = Hooked(model)
    W_U = model.lm_head.weight.double()
    clean, corrupted = [], []
    dla = {f"L{l}H{h}": 0.0 for l, h in spec["heads"]}
    patched = dict.fromkeys(dla, 0.0)
    n = len(spec["pairs"])
    for pair in spec["pairs"]:
        a, f = pair["answer"], pair["foil"]
        logits = hooked.forward(pair["clean"])
        clean.append(float(logits[a] - logits[f]))
        direction = W_U[a] - W_U[f]
        sources = {}
        for l, h in spec["heads"]:
            dla[f"L{l}H{h}"] += hooked.head_dla(l, h, direction) / n
            sources[(l, h)] = hooked.head_slice(l, h).clone()
        logits = hooked.forward(pair["corrupted"])
        corrupted.append(float(logits[a] - logits[f]))
        for (l, h), source in sources.items():
            logits = hooked.forward(pair["corrupted"], patch=(l, h, source))
            patched[f"L{l}H{h}"] += float(logits[a] - logits[f]) / n
    out = {"baselines": {"clean": sum(clean) / n, "corrupted": sum(corrupted) / n}, "head_dla": dla,
           "patched": patched}
    open(target, "w").write(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
