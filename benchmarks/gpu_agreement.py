"""Device check: the same spec on the CPU and on CUDA must give the same numbers.

    python benchmarks/gpu_agreement.py [--out DIR]

A tiny random GPT-NeoX and Llama (grouped-query) with the test suite's built-in tokenizer
(tests/word_tokenizer.py, no downloaded file) run every kind of analysis that needs no
shared data, once with `device: cpu` and once with `device: cuda`; every number of the
results is compared (relative 1e-4, absolute 1e-5: GPU kernels sum in another order).
Writes gpu-agreement.json with the differences (none when the devices agree).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SPEC = """
version: 1
name: gpu_agreement_{arch}
model: {{source: random, architecture: {arch}, size: tiny, seed: 3, prepend_bos: true,
        tokenizer: {tokenizer}, bos_token: "<|endoftext|>"}}
vocabularies:
  categories: {{items: [birds, fish, mammals]}}
  descriptors: {{pairs: [[big, small], [tall, short], [fast, slow]]}}
  nouns: {{items: [Dogs, Cats, Wolves]}}
prompts:
  template: "All {{category}} are {{descriptor}}. {{noun}} are {{category}}. Therefore, {{lower(noun)}} are"
  slots: {{category: categories, descriptor: descriptors, noun: nouns}}
  answer: 'first_token(" " + descriptor)'
  foil: 'first_token(" " + opposite(descriptor))'
  corrupt: {{swap: descriptor}}
analyses:
  - kind: logit_lens
  - kind: layer_attribution
  - {{kind: head_attribution, id: heads}}
  - {{kind: activation_patching, id: patch_z, target: z}}
  - {{kind: activation_patching, id: patch_resid, target: resid_pre, positions: [final, descriptor]}}
  - {{kind: attribution_patching, id: attrib, target: z, compare_with: patch_z}}
  - {{kind: ablation, heads: 'top(heads, 2)'}}
"""


def run_on(arch: str, device: str, folder: Path):
    from mi_dsl.running import run_spec
    from word_tokenizer import word_tokenizer_file

    spec = folder / f"{arch}.yaml"
    spec.write_text(SPEC.format(arch=arch, tokenizer=word_tokenizer_file()))
    started = time.perf_counter()
    results = run_spec(spec, overrides=[f"model.device={device}"], out_dir=str(folder / device),
                       progress=False, fresh=True).results
    return results, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "golden"))
    import golden_compare
    from record import golden_numbers

    golden_compare.REL, golden_compare.ABS = 1e-4, 1e-5
    report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "models": {}}
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("gpt_neox", "llama"):
            cpu, cpu_s = run_on(arch, "cpu", Path(tmp))
            gpu, gpu_s = run_on(arch, "cuda", Path(tmp))
            diffs = golden_compare.differences(json.loads(json.dumps(golden_numbers(cpu))),
                                               json.loads(json.dumps(golden_numbers(gpu))))
            report["models"][arch] = {"cpu_seconds": round(cpu_s, 2), "cuda_seconds": round(gpu_s, 2),
                                      "analyses": sorted(cpu["analyses"]), "differences": diffs[:50],
                                      "n_differences": len(diffs)}
            print(f"{arch}: {len(diffs)} differences; cpu {cpu_s:.1f}s, cuda {gpu_s:.1f}s", flush=True)
    out = Path(args.out) / "gpu-agreement.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0 if all(m["n_differences"] == 0 for m in report["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
