"""Two checks of a run, beside runtime/run.py (its size): a result as the store gives it back, and
the model's tokenizer against the spec's."""
from __future__ import annotations


def json_roundtrip(result):
    """A result exactly as the store would give it back, so first runs and reruns agree."""
    import json

    from ..core.result import Result

    data = json.loads(json.dumps({"record": result.record(), "tables": result.tables}))
    return Result.from_record(data["record"], data["tables"])


def check_token_ids(run) -> None:
    """The compiler's tokenizer and the model's must agree, or every position is off."""
    from ..errors import RunError

    if not run.dataset.pairs:
        return
    pair = run.dataset.pairs[0]
    ids = run.loaded.bridge.to_tokens(pair.clean.text, prepend_bos=run.plan.model.prepend_bos)[0].tolist()
    if ids != list(pair.clean.ids):
        raise RunError("the model's tokenizer splits the prompts differently from the spec's tokenizer "
                       f"({len(ids)} vs {len(pair.clean.ids)} tokens for '{pair.clean.text}')",
                       run.spec.loc("model", "tokenizer") if run.spec.model.tokenizer else run.spec.loc("model"),
                       hint="point model.tokenizer at the model's own tokenizer")
