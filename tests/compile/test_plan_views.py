"""`mi-run plan` shows each of the first pairs as the model sees it (issue 24, item 3): both prompts'
tokens, each named span's token indices in both (one notation, the report's @i), and for patching
across lengths which clean position each selector patches into which corrupted one; hooks that end
in '?' are explained."""
from __future__ import annotations

from tests.dataset.test_pairs_file import file_spec, ioi_csv

ANALYSES = """\
metric: logit_diff
analyses:
  - {kind: activation_patching, id: by_name, target: resid_pre, positions: [io, 's2[-1]', final]}
"""


def test_the_plan_shows_both_prompts_and_the_aligned_positions(tmp_path, cli):
    spec = file_spec(tmp_path, ioi_csv(), tail=ANALYSES)
    code, out, err = cli("plan", spec, "--examples", "12")
    assert code == 0, err
    # "When Mary and Horses went to the store, Horses gave ..." (Horses is ' H' 'orses') vs "..., Mary gave ..."
    assert "  spans:     io @2 / @2; s @4,5 / @4,5; place @9 / @9; s2 @11,12 / @11  (clean / corrupted)" in out
    assert "by_name patches: io clean @2 -> corrupted @2; s2[-1] clean @12 -> corrupted @11; " \
           "final clean @16 -> corrupted @15" in out
    assert "  corrupted: When Mary and John went to the store, Mary gave a drink to\n" \
           "             0:'<|endoftext|>' 1:'When' 2:' Mary'" in out
    code, out, _ = cli("plan", spec, "--json")
    import json

    views = json.loads(out)["dataset"]["pair_views"]
    assert views[0]["spans"]["io"] == {"clean": [[2]], "corrupted": [[2]]}
