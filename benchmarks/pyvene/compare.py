"""Step 2 of the pyvene comparison, in pyvene's own environment (never CI's):

    python3 -m venv /work/ref-pyvene
    /work/ref-pyvene/bin/pip install torch==2.13.0 && /work/ref-pyvene/bin/pip install pyvene transformers
    /work/ref-pyvene/bin/python benchmarks/pyvene/compare.py

Reads benchmarks/pyvene/inputs.json (make_inputs.py, mi-dsl's side: token ids, positions, labels,
the DAS split), rebuilds the plain-transformers GPT-2 of tests/analyses/pyvene_model.py from its
seed (checksum checked) and runs, through pyvene:
  full vector   pv.VanillaIntervention at `block_input` (the residual stream entering the layer) of
                every layer, at the size's position and at the final position, source -> base: each
                example's candidate logits at the base's final position
  DAS           pv.LowRankRotatedSpaceIntervention (k = 2) at block_input of layer 1, final
                position; its rotation built as mi-dsl builds its own (torch.manual_seed(seed), then
                orthogonal_ and torch's orthogonal parametrization), Adam, cross-entropy of the label
                over the candidates, the same minibatch order (torch.randperm under the seed); every
                epoch: mean training loss and validation loss; at the end: W and the test IIA
Writes tests/analyses/fixtures/pyvene_interchange.json, which tests/analyses/test_pyvene_fixture.py
compares with mi-dsl's numbers in CI. Only numbers are committed; this script is the recipe.
"""
from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.analyses.pyvene_model import build, checksum  # noqa: E402  (torch and transformers only)

FIXTURE = ROOT / "tests" / "analyses" / "fixtures" / "pyvene_interchange.json"


def candidate_logits(logits, examples):
    """[n, 2] the final position's logits of each example's two candidates."""
    return torch.stack([logits[i, len(e["base"]) - 1, e["candidates"]] for i, e in enumerate(examples)])


def batch(examples, key):
    return torch.tensor([e[key] for e in examples])


def locations(examples, position):
    """pyvene's unit locations: per intervention (one here), per example, the positions."""
    source = [[e["positions"][position][1] for e in examples]]
    base = [[e["positions"][position][0] for e in examples]]
    return {"sources->base": (source, base)}


def full_vector(pv, model, examples):
    out = {}
    for layer in range(model.config.n_layer):
        for position in ("size", "final"):
            config = pv.IntervenableConfig([{"layer": layer, "component": "block_input", "unit": "pos",
                                             "max_number_of_units": 1}], intervention_types=pv.VanillaIntervention)
            intervenable = pv.IntervenableModel(config, model=model)
            with torch.no_grad():
                _, counterfactual = intervenable(base={"input_ids": batch(examples, "base")},
                                                 sources=[{"input_ids": batch(examples, "source")}],
                                                 unit_locations=locations(examples, position))
            out[f"L{layer} {position}"] = candidate_logits(counterfactual.logits, examples).tolist()
    return out


def das(pv, model, examples, split, settings):
    training, k, layer = settings["training"], settings["dims"], settings["layers"][0]
    d = model.config.n_embd
    config = pv.IntervenableConfig([{"layer": layer, "component": "block_input", "unit": "pos",
                                     "max_number_of_units": 1, "low_rank_dimension": k}],
                                   intervention_types=pv.LowRankRotatedSpaceIntervention)
    intervenable = pv.IntervenableModel(config, model=model)
    intervention = next(iter(intervenable.interventions.values()))
    intervention = intervention[0] if isinstance(intervention, (list, tuple)) else intervention
    # mi-dsl's initial rotation: the seed, then orthogonal_ and the parametrization (both draw from the
    # global generator), on pyvene's own low-rank rotate layer class
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training["seed"])
        weight = torch.empty(d, k)
        torch.nn.init.orthogonal_(weight)
        rotate = pv.models.layers.LowRankRotateLayer(d, k, init_orth=False)
        rotate.weight = torch.nn.Parameter(weight)
        rotate = torch.nn.utils.parametrizations.orthogonal(rotate)
    intervention.rotate_layer = rotate
    for p in model.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(rotate.parameters(), lr=training["lr"])
    generator = torch.Generator().manual_seed(training["seed"])
    fit = torch.tensor(split["fit"])
    curves = {"train_loss": [], "val_loss": []}
    best, best_loss = rotate.weight.detach().clone(), float("inf")   # the best validation epoch's rotation is kept

    def loss_of(indices):
        chosen = [examples[i] for i in indices]
        _, counterfactual = intervenable(base={"input_ids": batch(chosen, "base")},
                                         sources=[{"input_ids": batch(chosen, "source")}],
                                         unit_locations=locations(chosen, "final"))
        logits = candidate_logits(counterfactual.logits, chosen)
        target = torch.tensor([e["candidates"].index(e["label"]) for e in chosen])
        return torch.nn.functional.cross_entropy(logits, target, reduction="none"), logits

    for _epoch in range(training["epochs"]):
        order = fit[torch.randperm(len(fit), generator=generator)]
        total = 0.0
        for start in range(0, len(order), training["batch_size"]):
            chosen = order[start:start + training["batch_size"]].tolist()
            losses, _ = loss_of(chosen)
            loss = losses.mean()
            grads = torch.autograd.grad(loss, list(rotate.parameters()))
            for p, g in zip(rotate.parameters(), grads):
                p.grad = g
            optimizer.step()
            total += float(loss) * len(chosen)
        curves["train_loss"].append(total / len(order))
        with torch.no_grad():
            curves["val_loss"].append(float(loss_of(split["validation"])[0].mean()))
        if curves["val_loss"][-1] < best_loss - 1e-6:
            best, best_loss = rotate.weight.detach().clone(), curves["val_loss"][-1]
    with torch.no_grad():
        with torch.random.fork_rng(devices=[]):
            rotate.weight = best   # the parametrization's right inverse: the best epoch's W again
        _, logits = loss_of(split["test"])
        target = torch.tensor([examples[i]["candidates"].index(examples[i]["label"]) for i in split["test"]])
        iia = float((logits.argmax(-1) == target).double().mean())
        W = best
    return {**curves, "test_iia": iia, "test_logits": logits.tolist(), "W": W.tolist()}


def main() -> None:
    import pyvene as pv

    inputs = json.loads((Path(__file__).with_name("inputs.json")).read_text())
    torch.set_num_threads(1)
    model = build(inputs["model_seed"])
    assert checksum(model) == inputs["model_checksum"], "the rebuilt model is not the one mi-dsl ran"
    examples = inputs["examples"]
    out = {"model_checksum": inputs["model_checksum"], "inputs": inputs,
           "versions": {name: metadata.version(name) for name in ("pyvene", "torch", "transformers")},
           "python": platform.python_version(),
           "full_vector": full_vector(pv, model, examples),
           "das": das(pv, build(inputs["model_seed"]), examples, inputs["split"], inputs["das"])}
    FIXTURE.write_text(json.dumps(out) + "\n")
    print(f"wrote {FIXTURE}: pyvene {out['versions']['pyvene']}, DAS test IIA {out['das']['test_iia']:.3f}, "
          f"losses {[round(x, 4) for x in out['das']['train_loss']]}")


if __name__ == "__main__":
    main()
