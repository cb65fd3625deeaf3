"""Half-precision weights (model.dtype: bfloat16 / float16) with metrics in float32."""
from __future__ import annotations

import torch

from tests.spec_parts import animals, spec_text


def spec(tmp_path, tokenizer, dtype: str):
    path = tmp_path / f"{dtype}.yaml"
    path.write_text(spec_text(f"""
        version: 1
        name: half
        model: {{source: random, architecture: gpt_neox, size: tiny, seed: 4, tokenizer: {tokenizer},
                 bos_token: '<bos>', prepend_bos: true, dtype: {dtype}, device: cpu}}
        """, animals(), """
        metric: logit_diff
        analyses:
          - {kind: head_attribution, id: heads}
          - {kind: activation_patching, target: resid_pre, positions: [size, final]}
        """))
    return path


def test_bfloat16_weights_give_float32_metrics_close_to_float32(tmp_path, tiny_tokenizer):
    from mi_dsl.running import run_spec

    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = run_spec(spec(tmp_path, tiny_tokenizer, dtype), progress=False, fresh=True,
                               out_dir=str(tmp_path / dtype)).results
    full, half = runs["float32"], runs["bfloat16"]
    a = torch.tensor(full["per_prompt"]["clean"]["logit_diff"])
    b = torch.tensor(half["per_prompt"]["clean"]["logit_diff"])
    assert not torch.equal(a, b)  # the weights really were rounded
    assert torch.allclose(a, b, atol=0.05 * float(a.abs().max()) + 1e-3)
    heads_a = torch.tensor(full["analyses"]["heads"]["per_head"])
    heads_b = torch.tensor(half["analyses"]["heads"]["per_head"])
    assert torch.allclose(heads_a, heads_b, atol=0.05 * float(heads_a.abs().max()) + 1e-3)


def test_metrics_are_float32_dot_products_for_half_inputs():
    from mi_dsl.metrics import compute_metrics
    from mi_dsl.runtime.unembed import Unembed

    generator = torch.Generator().manual_seed(0)
    W_U = torch.randn(64, 50, generator=generator)
    x = torch.randn(4, 64, generator=generator)
    answers, foils = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    exact = compute_metrics(x, answers, foils, ["logit_diff", "rank"], Unembed(W_U, None))
    half = compute_metrics(x.bfloat16(), answers, foils, ["logit_diff", "rank"], Unembed(W_U.bfloat16(), None))
    assert half["logit_diff"].dtype == torch.float32
    # the float32 dot product of the rounded inputs, not a bfloat16 sum
    rounded = (x.bfloat16().float() @ W_U.bfloat16().float())
    expected = rounded.gather(1, answers[:, None])[:, 0] - rounded.gather(1, foils[:, None])[:, 0]
    assert torch.allclose(half["logit_diff"], expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(half["logit_diff"], exact["logit_diff"], atol=0.1)
