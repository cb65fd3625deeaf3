"""Pair datasets from files (`dataset: {file: ...}`, dataset/pair_rows.py and pairs_file.py).

The field's datasets are fixed pairs (EAP-IG's CSVs, MIB's rows). Here:
- a CSV of IOI pairs written by hand (f-strings, not mi-dsl's renderer), named spans marked
  {io:Mary}, gives exactly the pairs (token ids, spans, answers, slot values) that a template
  spec of the same pairs gives, prompts of different lengths included;
- each answer reading (one token, first token, token set, token id, continuation), each
  layout (columns, EAP-IG's, MIB's) and each format (CSV, JSONL, Parquet) reads what it says,
  and every fault names the file and the row's line;
- run on a random model, the file spec's numbers equal the template spec's (patching by
  named position across prompts of different lengths included).
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mi_dsl.compile import prepare
from mi_dsl.errors import MiError, SchemaError, SpecMeaningError

from tests.word_tokenizer import word_tokenizer_file

TOKENIZER = word_tokenizer_file()
MODEL = (f"model:\n  source: random\n  architecture: gpt_neox\n  size: tiny\n  seed: 3\n  prepend_bos: true\n"
         f"  tokenizer: {TOKENIZER}\n  bos_token: '<|endoftext|>'\n")
# " Horses" is two tokens in the test tokenizer: pairs with it have prompts of different lengths
NAMES = ["Mary", "John", "Horses"]
PLACES = ["store", "park"]
IOI = [(io, s, place) for io in NAMES for s in NAMES if io != s for place in PLACES]
CLEAN = "When {io} and {s} went to the {place}, {s2} gave a drink to"

TEMPLATE_SPEC = f"""\
vocabularies:
  names: {{items: [{', '.join(NAMES)}]}}
  places: {{items: [{', '.join(PLACES)}]}}
prompts:
  template: "{CLEAN}"
  slots: {{io: names, s: names, place: places, s2: names}}
  where: 'io != s and s2 == s'
  answer: 'first_token(" " + io)'
  foil: 'first_token(" " + s)'
  corrupt: {{set: {{s2: io}}}}
"""


def marked(io: str, s: str, place: str, s2: str) -> str:
    return f"When {{io:{io}}} and {{s:{s}}} went to the {{place:{place}}}, {{s2:{s2}}} gave a drink to"


def ioi_csv() -> str:
    rows = [f'"{marked(io, s, place, s)}","{marked(io, s, place, io)}", {io}, {s}' for io, s, place in IOI]
    return "clean,corrupted,answer,foil\n" + "\n".join(rows) + "\n"


def write_spec(folder: Path, body: str, tail: str = "", name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text("version: 1\nname: pairs\n" + MODEL + textwrap.dedent(body) + textwrap.dedent(tail))
    return path


def file_spec(folder: Path, csv_text: str, dataset: str = "{file: pairs.csv, spans: markers, answers: first_token}",
              tail: str = "", file: str = "pairs.csv") -> Path:
    (folder / file).write_text(csv_text)
    return write_spec(folder, f"dataset: {dataset}\n", tail)


def prepared(path: Path):
    return prepare(str(path), [], [])


def test_a_marked_csv_gives_the_template_specs_pairs(tmp_path):
    template = prepared(write_spec(tmp_path, TEMPLATE_SPEC, name="template.yaml")).dataset
    from_file = prepared(file_spec(tmp_path, ioi_csv())).dataset
    assert len(from_file.pairs) == len(template.pairs) == len(IOI) == 12
    assert len({len(p.corrupted.ids) - len(p.clean.ids) for p in from_file.pairs}) > 1, "lengths differ"
    for mine, theirs in zip(from_file.pairs, template.pairs):
        assert mine.clean == theirs.clean and mine.corrupted == theirs.corrupted
        assert (mine.answers, mine.foils) == (theirs.answers, theirs.foils)
        assert mine.values == theirs.values and mine.corrupted_values == theirs.corrupted_values
    assert from_file.slots == ["io", "s", "place", "s2"]
    horses = next(p for p in from_file.pairs if p.values[1] == ("s", "Horses"))
    assert horses.clean.spans["s"][0][1] - horses.clean.spans["s"][0][0] == 2, "a two-token span"


def test_markers_offsets_and_their_faults(tmp_path):
    from mi_dsl.dataset.pairs_file import parse_markers

    assert parse_markers("a {x:b c} {{d}} {y:e}", None) == ("a b c {d} e", [("x", 2, 5), ("y", 10, 11)])
    for bad in ("a {x b}", "a {1x:b}", "a {x:}", "a } b", "a {x:b"):
        with pytest.raises(SchemaError, match="marker|unmatched"):
            parse_markers(bad, None)
    text = "clean,corrupted,answer,foil,clean_spans,corrupted_spans\n" \
           '"When Mary and John went to the store, John gave a drink to",' \
           '"When Mary and John went to the store, Mary gave a drink to", Mary, John,' \
           '"{""io"": [5, 9], ""s"": [[38, 42], [14, 18]]}","{""io"": [[5, 9], [38, 42]], ""s"": [14, 18]}"\n'
    dataset = prepared(file_spec(tmp_path, text, "{file: pairs.csv, spans: offsets}")).dataset
    pair = dataset.pairs[0]
    assert pair.clean.spans == {"io": ((2, 3),), "s": ((4, 5), (10, 11))}, "sorted by offset: s#2 is the later"
    assert pair.corrupted.spans == {"io": ((2, 3), (10, 11)), "s": ((4, 5),)}
    out_of_range = text.replace('[5, 9], ""s""', '[5, 99], ""s""')
    with pytest.raises(SchemaError, match="not \\[start, end\\]") as err:
        prepared(file_spec(tmp_path, out_of_range, "{file: pairs.csv, spans: offsets}"))
    assert err.value.location.file.endswith("pairs.csv") and err.value.location.line == 2


def test_unmarked_braces_warn_and_a_bad_row_is_located(tmp_path):
    dataset = prepared(file_spec(tmp_path, ioi_csv(), "{file: pairs.csv, answers: first_token}")).dataset
    assert any("looks marked" in w.message for w in dataset.warnings)
    broken = ioi_csv().splitlines()
    broken[3] = broken[3].replace("{s2:", "{s2 ")
    with pytest.raises(SchemaError, match="not \\{name:text\\}") as err:
        prepared(file_spec(tmp_path, "\n".join(broken) + "\n"))
    assert (Path(err.value.location.file).name, err.value.location.line) == ("pairs.csv", 4)


HEADER = "clean,corrupted,answer,foil\n"
ROW = '"When Mary and John went to the store, John gave a drink to","When Mary and John went to the store, Mary ' \
      'gave a drink to",{answer},{foil}\n'


def one_row(tmp_path, answer: str, foil: str, answers: str = ""):
    reading = f", answers: {answers}" if answers else ""
    return prepared(file_spec(tmp_path, HEADER + ROW.format(answer=answer, foil=foil),
                              f"{{file: pairs.csv{reading}}}", tail="metric: logit_diff\n")).dataset.pairs[0]


def test_answer_readings(tmp_path):
    from mi_dsl.dataset.tokenizer import load_tokenizer
    from mi_dsl.spec.model import ModelSpec

    tok = load_tokenizer(ModelSpec(source="random", architecture="gpt_neox", size="tiny", prepend_bos=True,
                                   tokenizer=str(TOKENIZER)), "<|endoftext|>")
    first = lambda text: tok.encode(text)[0]  # noqa: E731
    pair = one_row(tmp_path, " Mary", " John")
    assert (pair.answers, pair.foils, pair.continuation) == ((first(" Mary"),), (first(" John"),), False)
    with pytest.raises(SchemaError, match="is 2 tokens") as err:
        one_row(tmp_path, " Horses", " John")
    assert "answers: continuation" in err.value.hint and err.value.location.line == 2
    assert one_row(tmp_path, " Horses", " John", "first_token").answers == (first(" Horses"),)
    pair = one_row(tmp_path, " Mary| Anna", " John", "token_set")
    assert pair.answers == (first(" Mary"), first(" Anna"))
    pair = one_row(tmp_path, str(first(" Mary")), str(first(" John")), "token_id")
    assert (pair.answers, pair.foils) == ((first(" Mary"),), (first(" John"),))
    with pytest.raises(SchemaError, match="not a token id"):
        one_row(tmp_path, "99999999", "1", "token_id")
    (tmp_path / "spec.yaml").write_text((tmp_path / "spec.yaml").read_text())
    spec = file_spec(tmp_path, HEADER + ROW.format(answer=" Horses", foil=" John"),
                     "{file: pairs.csv, answers: continuation}", tail="metric: continuation_logprob_diff\n")
    pair = prepared(spec).dataset.pairs[0]
    assert pair.continuation and pair.answers == tuple(tok.encode(" Horses")) and len(pair.answers) == 2
    with pytest.raises(SpecMeaningError, match="share"):
        one_row(tmp_path, " Mary", " Mary")


def test_eap_ig_layout_and_the_hint_that_names_it(tmp_path):
    ids = "clean,corrupted,correct_idx,incorrect_idx\n" + ROW.format(answer="603", foil="497")
    with pytest.raises(SchemaError, match="no column 'answer'") as err:
        prepared(file_spec(tmp_path, ids))
    assert "layout: eap_ig" in err.value.hint
    pair = prepared(file_spec(tmp_path, ids, "{file: pairs.csv, layout: eap_ig}")).dataset.pairs[0]
    assert (pair.answers, pair.foils) == ((603,), (497,))
    renamed = "good,bad,right,wrong\n" + ROW.format(answer=" Mary", foil=" John")
    columns = "{file: pairs.csv, columns: {clean: good, corrupted: bad, answer: right, foil: wrong}}"
    assert prepared(file_spec(tmp_path, renamed, columns)).dataset.pairs[0].clean.text.endswith("a drink to")


MIB_ROW = {"prompt": "When Mary and John went to the store, John gave a drink to",
           "metadata": {"indirect_object": "Mary", "subject": "John", "random_c": "Anna"},
           "s2_io_flip_counterfactual": {"prompt": "When Mary and John went to the store, Mary gave a drink to"},
           "abc_counterfactual": {"prompt": "When Anna and Tom went to the store, Tom gave a drink to"}}


def test_mib_rows_as_mib_reads_them_in_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = json.dumps(MIB_ROW) + "\n"
    pair = prepared(file_spec(tmp_path, jsonl, "{file: mib.jsonl, layout: mib, task: ioi}", file="mib.jsonl")
                    ).dataset.pairs[0]
    assert pair.corrupted.text == MIB_ROW["s2_io_flip_counterfactual"]["prompt"]
    abc = prepared(file_spec(tmp_path, jsonl, "{file: mib.jsonl, layout: mib, task: ioi, "
                                              "counterfactual: abc_counterfactual}", file="mib.jsonl")).dataset
    assert abc.pairs[0].corrupted.text.startswith("When Anna") and abc.pairs[0].answers == pair.answers
    pq.write_table(pa.Table.from_pylist([MIB_ROW, MIB_ROW]), tmp_path / "mib.parquet")
    from_parquet = prepared(write_spec(tmp_path, "dataset: {file: mib.parquet, layout: mib, task: ioi}\n")).dataset
    assert from_parquet.pairs[1] == pair
    with pytest.raises(SchemaError, match="MIB's mcqa rows") as err:
        prepared(file_spec(tmp_path, jsonl, "{file: mib.jsonl, layout: mib, task: mcqa}", file="mib.jsonl"))
    assert err.value.location.line == 1


def test_spec_level_faults(tmp_path):
    (tmp_path / "pairs.csv").write_text(ioi_csv())
    both = write_spec(tmp_path, TEMPLATE_SPEC + "dataset: {file: pairs.csv}\n")
    with pytest.raises(SpecMeaningError, match="both `prompts:`"):
        prepared(both)
    outside = write_spec(tmp_path, "dataset: {file: ../elsewhere.csv}\n")
    with pytest.raises(MiError, match="outside the spec's directory tree"):
        prepared(outside)
    with pytest.raises(SchemaError, match="for layout mib"):
        prepared(write_spec(tmp_path, "dataset: {file: pairs.csv, task: ioi}\n"))


# ----------------------------------------------------------------------------- the same numbers

ANALYSES = """\
metric: logit_diff
pipeline:
  - keep: 'clean.logit_diff > -100'
analyses:
  - {kind: logit_lens, id: lens}
  - {kind: head_attribution, id: heads}
  - {kind: activation_patching, id: by_name, target: resid_pre, positions: [io, s, 's2[-1]', final]}
  - {kind: attribution_patching, id: atp, target: resid_pre, positions: [io, 's2[-1]', final]}
  - {kind: activation_patching, id: z_final, target: z, positions: final}
"""


@pytest.mark.parametrize("size", ["tiny"])
def test_a_file_spec_runs_to_the_template_specs_numbers(tmp_path, size):
    from mi_dsl.running import run_spec

    results = {}
    for name, path in (("template", write_spec(tmp_path, TEMPLATE_SPEC, ANALYSES, name="template.yaml")),
                       ("file", file_spec(tmp_path, ioi_csv(), tail=ANALYSES))):
        outcome = run_spec(path, out_dir=str(tmp_path / name), progress=False)
        results[name] = json.loads((outcome.run_dir / "results.json").read_text())
    template, from_file = results["template"], results["file"]
    assert from_file["baselines"] == template["baselines"]
    assert from_file["per_prompt"] == template["per_prompt"]
    for key, analysis in template["analyses"].items():
        timing = ("seconds", "passes", "summary")  # the summary quotes the seconds
        mine = {k: v for k, v in from_file["analyses"][key].items() if k not in timing}
        theirs = {k: v for k, v in analysis.items() if k not in timing}
        assert mine == theirs, key
    assert template["analyses"]["by_name"]["alignment"].startswith("by name")
    # every pair's own positions (issue 24 found the first prompt's only): 'When Mary and Horses ...,
    # Horses gave' (clean, the source) / '..., Mary gave' (corrupted, the base): s2[-1] is 12 -> 11
    horses = next(i for i, row in enumerate(from_file["dataset"]["pairs"]) if row["foil_text"] == " H")
    aligned = from_file["analyses"]["by_name"]["aligned_positions"][horses]
    assert aligned == [{"base": [2], "source": [2]}, {"base": [4, 5], "source": [4, 5]},
                       {"base": [11], "source": [12]}, {"base": [15], "source": [16]}]
    assert from_file["analyses"]["z_final"]["patched_positions"][horses] == [15]


# The 16 pairs of specs/data/ioi_pairs.csv as a template spec: io x s x place x thing, the
# repeated subject a slot of its own (s2 == s), set to io in the corrupted prompt.
SHIPPED_AS_TEMPLATE = """\
version: 1
name: ioi_pairs
model: {source: embedded, prepend_bos: true}
vocabularies:
  ios: {items: [Mary, Sarah]}
  subjects: {items: [John, David]}
  places: {items: [store, park]}
  things: {items: [drink, book]}
prompts:
  template: "When {io} and {s} went to the {place}, {s2} gave a {thing} to"
  slots: {io: ios, s: subjects, place: places, s2: subjects, thing: things}
  where: 's2 == s'
  answer: 'first_token(" " + io)'
  foil: 'first_token(" " + s)'
  corrupt: {set: {s2: io}}
metric: logit_diff
"""


@pytest.mark.slow
def test_the_shipped_pair_spec_equals_a_template_spec_of_its_pairs_on_gemma(tmp_path):
    """specs/ioi_pairs.yaml (a pair CSV, EAP-IG's columns with answer and foil as text) gives the numbers of
    tests/golden/ioi_pairs.json (tests/test_shipped_specs.py); the same analyses over the same 16 pairs
    written as a template give those numbers too, so a file spec measures what a template spec measures."""
    import yaml

    from mi_dsl.running import run_spec
    from tests.golden_compare import check_golden

    root = Path(__file__).resolve().parents[2]
    shipped = yaml.safe_load((root / "specs" / "ioi_pairs.yaml").read_text())
    template = tmp_path / "ioi_template.yaml"
    template.write_text(SHIPPED_AS_TEMPLATE + yaml.safe_dump({"analyses": shipped["analyses"]}))
    file_pairs = prepare(str(root / "specs" / "ioi_pairs.yaml"), [], []).dataset.pairs
    seen = lambda prompt, names: (prompt.ids, {k: prompt.spans[k] for k in names})  # noqa: E731
    for mine, theirs in zip(file_pairs, prepare(str(template), [], []).dataset.pairs):
        for side in ("clean", "corrupted"):
            names = getattr(mine, side).spans
            assert seen(getattr(mine, side), names) == seen(getattr(theirs, side), names)
        assert (mine.answers, mine.foils) == (theirs.answers, theirs.foils)
    outcome = run_spec(template, out_dir=str(tmp_path), progress=False)
    check_golden("ioi_pairs", json.loads((outcome.run_dir / "results.json").read_text()))


def test_mean_and_resample_ablation_across_lengths_use_the_same_named_position(tmp_path):
    """Prompts of several lengths ('... Horses gave' / '... Mary gave'): resample ablation of a head at
    `s2[-1]` takes the corrupted partner's z at its own s2[-1] (index 11, the clean's is 12), mean ablation
    the mean over the clean prompts' s2[-1]; each equals the same replacement written by hand with a hook
    on the bridge, one prompt at a time."""
    import torch

    from tests.analyses.test_patching import SHARP, compute, run_context
    from tests.random_sizes import tiny_variant

    (tmp_path / "pairs.csv").write_text(ioi_csv())
    with tiny_variant(SHARP):  # sharper weights: a head's z moves the logits visibly
        run = run_context(tmp_path, MODEL.replace("size: tiny", f"size: {SHARP}"),
                          "\ndataset: {file: pairs.csv, spans: markers, answers: first_token}\n"
                          "metric: logit_diff\nanalyses: []\n")
    assert len({len(p.clean.ids) for p in run.pairs} | {len(p.corrupted.ids) for p in run.pairs}) > 1
    layer, head = 0, 2  # layer 0: the next layer reads position s2 from the final position
    name = f"blocks.{layer}.attn.hook_z"

    def s2_last(prompt):
        return prompt.spans["s2"][0][1] - 1

    def z_at(prompt):
        store = {}
        with torch.no_grad():
            run.model.run_with_hooks(torch.tensor([prompt.ids]), prepend_bos=False,
                                     fwd_hooks=[(name, lambda z, hook: store.setdefault("z", z.detach().clone()))])
        return store["z"][0, s2_last(prompt), head]

    mean = torch.stack([z_at(p.clean) for p in run.pairs]).mean(0)
    for method, value_of in (("resample", lambda pair: z_at(pair.corrupted)), ("mean", lambda pair: mean)):
        result = compute(run, "ablation", id=method, heads=f"L{layer}H{head}", positions="s2[-1]", method=method)
        expected = []
        for pair in run.pairs:
            value, at = value_of(pair), s2_last(pair.clean)

            def swap(z, hook, at=at, value=value):
                z = z.clone()
                z[0, at, head] = value
                return z

            with torch.no_grad():
                logits = run.model.run_with_hooks(torch.tensor([pair.clean.ids]), prepend_bos=False,
                                                  fwd_hooks=[(name, swap)])[0, -1]
            expected.append(float(logits[pair.answer] - logits[pair.foil]))
        assert result.data["metric_after_per_prompt"] == pytest.approx(expected, rel=1e-4, abs=1e-5), method
        moved = [abs(a - b) for a, b in zip(result.data["metric_after_per_prompt"],
                                            result.data["metric_before_per_prompt"])]
        assert max(moved) > 1e-3, (method, moved)
