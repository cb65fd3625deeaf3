"""Step 1 of the pyvene comparison (mi-dsl's environment): the examples both sides run.

    python benchmarks/pyvene/make_inputs.py     # writes benchmarks/pyvene/inputs.json

The model of tests/analyses/pyvene_model.py (saved to a temporary folder), the task of its SPEC,
and mi-dsl's own counterfactual examples (base = clean prompt, source = corrupted), candidates,
labels, the positions of each site and the DAS split: token ids and indices only, so the reference
side (compare.py, in its own environment) needs neither mi-dsl nor a tokenizer.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def inputs(folder: Path):
    import torch

    from mi_dsl.analyses._interchange.run import _validation
    from mi_dsl.causal import Builder, SourceRule, load_causal_model, split
    from mi_dsl.compile import prepare
    from tests.analyses.pyvene_model import DAS, SPEC, build, checksum
    from tests.word_tokenizer import word_tokenizer_file

    model = build()
    model.save_pretrained(folder / "model")
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(path=folder / "model", tokenizer=word_tokenizer_file()))
    prepared = prepare(str(spec))
    causal, reader = load_causal_model(prepared.spec)
    examples = Builder(causal, reader, prepared.tokenizer).examples(prepared.dataset.pairs, SourceRule("corrupted"))
    training = DAS["training"]
    train, test = split(examples, "example", None, training["test_fraction"], training["seed"])
    val, fit = _validation(torch.tensor(train), training["seed"])

    def where(prompt, slot):
        start, end = prompt.spans[slot][0]
        return list(range(start, end))

    return {"model_checksum": checksum(model), "model_seed": 23,
            "examples": [{"base": list(e.base.ids), "source": list(e.source.ids),
                          "positions": {"size": [where(e.base, "size"), where(e.source, "size")],
                                        "final": [[len(e.base.ids) - 1], [len(e.source.ids) - 1]]},
                          "candidates": list(e.candidates), "label": e.label("d"), "base_label": e.base_label}
                         for e in examples],
            "split": {"fit": fit.tolist(), "validation": val.tolist(), "test": test}, "das": DAS}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        data = inputs(Path(folder))
    out = Path(__file__).with_name("inputs.json")
    out.write_text(json.dumps(data) + "\n")
    print(f"wrote {out}: {len(data['examples'])} examples, model {data['model_checksum'][:12]}")


if __name__ == "__main__":
    main()
