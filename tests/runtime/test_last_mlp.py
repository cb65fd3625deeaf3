"""The last block's MLP at the final positions only (runtime/last_mlp.py): the captures equal the full
forward's bit for bit, on random models with roughened norms and biases of every architecture the
tests build; it is on only where nothing reads another position after the last attention, and the
hook placement it relies on is the order in which the hooks really fire."""
from __future__ import annotations

import pytest
import torch

from mi_dsl.runtime import last_mlp
from mi_dsl.runtime.executor import ALL, Executor, at_final
from mi_dsl.runtime.unembed import UNEMBED_INPUT
from tests.runtime.test_kv_reuse import ARCHITECTURES, loaded_model


@pytest.fixture(scope="module")
def models(rough_models):
    return {a: loaded_model(a, rough_models) for a in ARCHITECTURES}


def mlp_rows(bridge):
    """A list that receives the rows of every input the last MLP gets (at its input hook point, registered
    on the module: no hook the executor sees)."""
    seen = []
    point = bridge.blocks[-1].mlp.hook_in
    return seen, [point.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[:-1].numel()))]


def attachable(bridge, name: str) -> bool:
    """Whether the bridge lets a hook attach there (some, such as hook_mlp_in, are off until enabled)."""
    try:
        with bridge.hooks(fwd_hooks=[(name, lambda act, hook=None: act)]):
            return True
    except ValueError:
        return False


def reference(bridge, tokens, names, final):
    """The hooks' values at each row's final position, from a forward with no executor in the way."""
    found = {}

    def keep(name):
        def hook(act, hook=None):
            found[name] = act[torch.arange(len(act)), final].detach().clone()
        return hook

    with torch.no_grad(), bridge.hooks(fwd_hooks=[(n, keep(n)) for n in names]):
        bridge(tokens, prepend_bos=False)
    return found


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_final_position_captures_equal_the_full_forward(models, architecture):
    loaded = models[architecture]
    bridge, last = loaded.bridge, loaded.bridge.cfg.n_layers - 1
    torch.manual_seed(3)
    tokens = torch.randint(5, 300, (5, 9))
    final = torch.tensor([8, 3, 6, 8, 0])  # right-padded rows end anywhere
    names = [f"blocks.{last}.hook_resid_post", "ln_final.hook_scale", UNEMBED_INPUT]
    expected = reference(bridge, tokens, names, final)
    executor = Executor(loaded)
    seen, handles = mlp_rows(bridge)
    try:
        with torch.no_grad():
            for _ in range(2):  # the first forward of a shape checks it against the full MLP, the second trusts it
                seen.clear()
                kept = executor.capture(tokens, {n: at_final(final) for n in names}, stop_after=UNEMBED_INPUT)[1]
                for name in names:
                    assert torch.equal(kept[name], expected[name]), name
    finally:
        for handle in handles:
            handle.remove()
    verdicts = list(executor.last_mlp_verdicts.values())
    assert verdicts and all(isinstance(v, bool) for v in verdicts)
    if verdicts == [True]:  # this machine's kernels give the same rows: the MLP ran on MIN_ROWS of 45
        assert set(seen) == {last_mlp.MIN_ROWS}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_hook_placement_is_the_order_hooks_fire_in(models, architecture):
    """Every hook `before_last_mlp` places before the last MLP fires before that MLP is called, and every
    other one after (the guard relies on this; a new architecture's hook names show here)."""
    bridge = models[architecture].bridge
    n_layers = bridge.cfg.n_layers
    entered, order = [], []
    handle = bridge.blocks[-1].mlp.register_forward_pre_hook(lambda module, args: entered.append(True))

    def note(name):
        def hook(act, hook=None):
            order.append((name, len(entered)))
        return hook

    names = [n for n in bridge.hook_dict if attachable(bridge, n)]
    try:
        with torch.no_grad(), bridge.hooks(fwd_hooks=[(n, note(n)) for n in names]):
            bridge(torch.randint(5, 300, (2, 6)), prepend_bos=False)
    finally:
        handle.remove()
    fired = dict(order)
    assert len(fired) > 20 and entered == [True]
    for name, mlp_called in fired.items():
        assert last_mlp.before_last_mlp(name, n_layers) == (mlp_called == 0), name


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_it_is_off_where_a_hook_inside_the_last_mlp_is_read(models, architecture):
    """Those hooks would see only the rows the MLP runs (hook_mlp_out is the MLP's own output hook on
    some architectures, the post-MLP norm's on others)."""
    loaded = models[architecture]
    last = loaded.bridge.cfg.n_layers - 1
    tokens = torch.randint(5, 300, (5, 9))
    for inside in (f"blocks.{last}.mlp.hook_out", f"blocks.{last}.mlp.hook_post", f"blocks.{last}.mlp.hook_in"):
        executor = Executor(loaded)
        names = [inside, UNEMBED_INPUT]
        with torch.no_grad():
            kept = executor.capture(tokens, {n: at_final(None) for n in names}, stop_after=UNEMBED_INPUT)[1]
        assert not executor.last_mlp_verdicts, inside
        expected = reference(loaded.bridge, tokens, names, torch.full((5,), 8))
        assert all(torch.equal(kept[n], expected[n]) for n in names), inside


def test_it_is_off_where_another_position_is_read_or_changed(models):
    loaded = models["gemma3"]
    bridge, last = loaded.bridge, loaded.bridge.cfg.n_layers - 1
    tokens = torch.randint(5, 300, (4, 8))
    executor = Executor(loaded)
    seen, handles = mlp_rows(bridge)
    everywhere = f"blocks.{last}.hook_resid_post"
    try:
        with torch.no_grad():
            kept = executor.capture(tokens, {everywhere: ALL, UNEMBED_INPUT: at_final(None)},
                                    stop_after=UNEMBED_INPUT)[1]
            assert set(seen) == {32}
            seen.clear()
            executor.capture(tokens, {UNEMBED_INPUT: at_final(None)}, stop_after=UNEMBED_INPUT,
                             interventions=[("ln_final.hook_scale", lambda act, hook=None: act)])
            assert set(seen) == {32}
            seen.clear()
            executor.capture(tokens, {UNEMBED_INPUT: at_final(None), "ln_final.hook_scale": at_final(torch.arange(4))},
                             stop_after=UNEMBED_INPUT)  # two different final positions
            assert set(seen) == {32}
            seen.clear()
            executor.capture(tokens, {UNEMBED_INPUT: lambda act: act[:, -1]}, stop_after=UNEMBED_INPUT)  # untyped
            assert set(seen) == {32}
        seen.clear()
        executor.capture(tokens, {UNEMBED_INPUT: at_final(None)}, stop_after=UNEMBED_INPUT)  # recording a graph
        assert set(seen) == {32}
    finally:
        for handle in handles:
            handle.remove()
    assert not executor.last_mlp_verdicts
    full = reference(bridge, tokens, [everywhere], torch.full((4,), 7))[everywhere]
    assert torch.equal(kept[everywhere][:, -1], full)


def test_a_hook_placed_wrongly_raises_instead_of_reading_zeros(models, monkeypatch):
    loaded = models["llama"]
    last = loaded.bridge.cfg.n_layers - 1
    monkeypatch.setattr(last_mlp, "before_last_mlp", lambda name, n_layers: name.startswith("blocks."))
    executor = Executor(loaded)
    with torch.no_grad(), pytest.raises(RuntimeError, match="runtime.last_mlp.py"):
        executor.capture(torch.randint(5, 300, (4, 8)), {f"blocks.{last}.hook_resid_post": ALL,
                                                         UNEMBED_INPUT: at_final(None)}, stop_after=UNEMBED_INPUT)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_shape_whose_rows_differ_runs_the_whole_mlp(models, architecture):
    """Five rows take another kernel path than 45 on MKL (their sums can differ in the last bit): the
    first forward's check finds it, and every forward keeps the full MLP's numbers."""
    last_mlp.MIN_ROWS, saved = 1, last_mlp.MIN_ROWS
    loaded = models[architecture]
    tokens = torch.randint(5, 300, (5, 9))
    expected = reference(loaded.bridge, tokens, [UNEMBED_INPUT], torch.full((5,), 8))[UNEMBED_INPUT]
    executor = Executor(loaded)
    try:
        with torch.no_grad():
            for _ in range(3):
                kept = executor.capture(tokens, {UNEMBED_INPUT: at_final(None)}, stop_after=UNEMBED_INPUT)[1]
                assert torch.equal(kept[UNEMBED_INPUT], expected)
    finally:
        last_mlp.MIN_ROWS = saved
    assert list(executor.last_mlp_verdicts) == [(45, 5, torch.float32, "cpu", torch.get_num_threads())]
