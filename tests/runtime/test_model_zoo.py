"""Every causal-LM family of the installed transformers (its
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, plus the encoder and encoder-decoder classes
of zoo.ZOO_EXTRA), built tiny with random weights (tests/zoo.py), capped and
monitored on a left-padded batch and checked against the float64 reference:

* discovery: the blocks found are the ones whose outputs are the model's hidden
  states (its own ``output_hidden_states`` tuple), one per layer;
* the cap, at each capped layer: every real token as the reference computes it
  from the block's output (floor exact, tokens above it bit for bit), every pad
  bit for bit as the block left it;
* the monitor: one reading per real token and position, equal to the
  reference's projections, pads marked invalid;
* a short greedy ``generate`` (where the model generates): capped tokens equal
  to those of a float64 oracle capping with plain forward hooks, and one monitor
  reading per token.

A family either passes all of it, or is refused at attach time with a message
that names it and the way out (ZOO_REFUSED; the way out is then checked too),
or cannot be built tiny here (zoo.ZOO_UNBUILDABLE, skipped with the reason).
A family new to a transformers release is built by the generic rules and must
pass: a failure names it. ``python tests/test_model_zoo.py`` prints the table.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from axis_steer.errors import AxisSteerError  # noqa: E402
from axis_steer.runtime import reference as R  # noqa: E402
from axis_steer.runtime.hooks import Attachment  # noqa: E402
from axis_steer.runtime.models import block_hidden, hidden_size  # noqa: E402

import zoo  # noqa: E402
from helpers import assert_proj_close, check_clamp_rows  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

CAPPED = (1, 2)  # capped and monitored layers (of the zoo's 4; T5's decoder has 2: see zoo)
PAD = (2, 0)  # left padding of the two rows
SEQ = 7
NEW_TOKENS = 3

#: families refused at attach time: words the message must hold, and the way out
#: (Attachment keyword arguments) under which the family must then pass
_LAYOUT = ("is not supported", "one residual stream of shape (batch, seq, hidden)")
ZOO_REFUSED: dict[str, tuple[tuple[str, ...], dict | None]] = {
    "blt": (("several stacks of blocks", "model.local_decoder.layers", "layers="), {"layers": "model.local_decoder.layers"}),
    "xlm": (("parallel lists", "layers='transformer.layer_norm2'"), {"layers": "transformer.layer_norm2"}),
    "cpmant": (_LAYOUT + ("prompt positions",), None),
    "deepseek_v4": (_LAYOUT + ("hyper-connections",), None),
    "hy_v4": (_LAYOUT + ("hyper-connections",), None),
    "qwen4_exp": (_LAYOUT + ("hyper-connections",), None),
    "qwen4_exp_text": (_LAYOUT + ("hyper-connections",), None),
    "gemma3n_text": (_LAYOUT + ("AltUp",), None),
    "hrm_text": (_LAYOUT + ("several times per forward",), None),
    "prophetnet": (_LAYOUT + ("ngram",), None),
    "reformer": (_LAYOUT + ("reversible",), None),
    "xlnet": (_LAYOUT + ("sequence-first",), None),
}


@dataclass
class Outcome:
    family: str
    status: str  # "exact", "refused", "unbuildable", "failed"
    detail: str = ""
    checks: list[str] = field(default_factory=list)
    model_class: str = ""


# ---- inputs --------------------------------------------------------------------------------


def _inputs(model, stack: str | None):
    """A left-padded batch for ``model``: the forward's keyword arguments and the
    mask of the capped stack's tokens (True = real)."""
    g = torch.Generator().manual_seed(3)
    emb = model.get_input_embeddings()
    hi = min(getattr(emb, "num_embeddings", zoo.ZOO_VOCAB), 100)
    ids = torch.randint(3, hi, (2, SEQ), generator=g)
    am = torch.ones(2, SEQ, dtype=torch.long)
    for r, p in enumerate(PAD):
        am[r, :p] = 0
        ids[r, :p] = 0
    kw = {"input_ids": ids, "attention_mask": am}
    real = am.bool()
    if getattr(model.config, "is_encoder_decoder", False):
        dec = torch.randint(3, hi, (2, 5), generator=g)
        dam = torch.ones(2, 5, dtype=torch.long)
        dam[1, :1] = 0  # other padding than the encoder's: the decoder must read its own mask
        dec[1, :1] = 0
        kw.update(decoder_input_ids=dec, decoder_attention_mask=dam)
        if stack != "encoder":
            real = dam.bool()
    return kw, real


def _hidden_states(out, model, stack: str | None):
    if getattr(model.config, "is_encoder_decoder", False):
        return out.encoder_hidden_states if stack == "encoder" else out.decoder_hidden_states
    return getattr(out, "hidden_states", None)


class _Taps:
    """Clones of block outputs: ``first=True`` hooks run before axis_steer's
    (the block's own output), the others after (what the next block gets)."""

    def __init__(self, blocks, layers, first: bool):
        self.outs: dict[int, list] = {i: [] for i in layers}
        self.handles = [blocks[i].register_forward_hook(self._hook(i), prepend=first) for i in layers]

    def _hook(self, i):
        def hook(mod, args, out):
            self.outs[i].append(block_hidden(out, i).detach().clone())

        return hook

    def close(self):
        for h in self.handles:
            h.remove()


# ---- the checks ----------------------------------------------------------------------------


def _check_discovery(model, att, kw, real, stack, checks):
    """The blocks' outputs are the model's hidden states, in order, one per layer."""
    blocks = att._layers.blocks
    n = len(blocks)
    taps = _Taps(blocks, range(n), first=False)
    with torch.no_grad():
        out = model(**kw, output_hidden_states=True)
    taps.close()
    hs = _hidden_states(out, model, stack)
    runs = [len(taps.outs[i]) for i in range(n)]
    assert set(runs) <= {0, 1} and runs[0] == 1, f"blocks ran {runs} times in one forward"
    skipped = [i for i in range(n) if not runs[i]]  # Mllama's cross-attention layers without an image
    h0 = taps.outs[0][0]
    assert h0.shape[:2] == real.shape, f"block 0 output {tuple(h0.shape)} for inputs {tuple(real.shape)}"
    if hs is None:
        checks.append("discovery: the model returns no hidden states; blocks and sizes checked only")
        return
    # the hidden states tuple holds every block's output; which entry is block i's
    # output is the model's business (i + 1 after the embeddings; i in Mamba's)
    def same(a, b):
        return a.shape == b.shape and torch.allclose(a[real], b[real], rtol=1e-6, atol=1e-6)

    ran = [i for i in range(n) if runs[i]]
    # the last block's entry may be after the final norm
    offsets = [k for k in (1, 0) if all(j + k < len(hs) and same(taps.outs[i][0], hs[j + k]) for j, i in enumerate(ran[:-1]))]
    assert offsets, (
        f"the {n} blocks found ({att._layers.path}) do not produce the model's hidden states: "
        "discovery picked the wrong modules"
    )
    assert len(hs) in (len(ran) + 1, len(ran) + offsets[0]), f"{len(hs)} hidden states for {len(ran)} blocks run: blocks are missing"
    checks.append(f"discovery: {n} blocks at {att._layers.path}, hidden_states[i + {offsets[0]}] = block i"
                  + (f" (blocks {skipped} do not run on text alone)" if skipped else ""))


def _thresholds(model, att, kw, real, axis, layers):
    taps = _Taps(att._layers.blocks, layers, first=False)
    with torch.no_grad():
        model(**kw)
    taps.close()
    return {i: float(torch.quantile((taps.outs[i][0][real].double() @ _unit(axis[i])), 0.5)) for i in layers}


def _unit(v):
    v = v.double()
    return v / v.norm()


def _check_cap_and_monitor(model, att, kw, real, axis, layers, checks):
    taus = _thresholds(model, att, kw, real, axis, layers)
    cap = att.cap(list(layers), taus)
    mon = att.monitor(list(layers))
    blocks = att._layers.blocks
    with att:
        before = _Taps(blocks, layers, first=True)
        after = _Taps(blocks, layers, first=False)
        with torch.no_grad():
            model(**kw)
        before.close()
        after.close()
        r = mon.readings()
    fired = 0
    real_np = real.numpy()
    for j, i in enumerate(layers):
        h = before.outs[i][0].double().numpy()
        o = after.outs[i][0].double().numpy()
        u = _unit(axis[i]).numpy()
        # pads: bit for bit; real tokens: the reference's floor
        check_clamp_rows(h, o, u.astype(np.float32), taus[i], np.inf, "float32", mask=real_np)
        fired += int(R.clamp(h, u, taus[i], np.inf, real_np).changed[0].sum())
        assert np.array_equal(r.valid, real_np), f"monitor valid {r.valid.tolist()} != mask {real_np.tolist()}"
        p_ref = R.project(h, u, real_np)
        assert_proj_close(r.p_in[:, j], p_ref, h, u)
        assert_proj_close(r.p_out[:, j], R.project(o, u, real_np), o, u)
    assert fired > 0, "no token was capped: the check would prove nothing"
    checks.append(f"cap: floors at layers {list(layers)} exact on {int(real.sum())} real tokens ({fired} capped), pads untouched")
    checks.append("monitor: one reading per real token, equal to the reference")
    cap.remove()
    mon.remove()
    return taus


class _Oracle:
    """Float64 capping with plain forward hooks (the reference formula, every
    real token, never a pad), for generate: the mask of each call is the
    prompt's mask extended by the generated tokens."""

    def __init__(self, blocks, layers, taus, axis, prompt_mask, first_layer):
        self.ext = prompt_mask
        self.calls = 0  # forward calls so far: call k sees the prompt and k - 1 generated tokens
        self.proj: list = []
        self.handles = []
        self.first = first_layer
        for i in layers:
            self.handles.append(blocks[i].register_forward_hook(self._hook(i, taus[i], _unit(axis[i]))))
        self.handles.append(blocks[first_layer].register_forward_pre_hook(self._count))

    def _count(self, mod, args):
        self.calls += 1

    def _hook(self, i, tau, u):
        def hook(mod, args, out):
            h = block_hidden(out, i)
            seq = h.shape[1]
            total = self.ext.shape[1] + self.calls - 1
            full = torch.cat([self.ext, torch.ones(h.shape[0], self.calls - 1, dtype=torch.bool)], 1)
            mask = full[:, total - seq :]
            res = R.clamp(h.detach(), u.to(h.device), tau, float("inf"), mask)
            if i == self.first:
                self.proj.append(res.p_before[0].float())
            new = torch.where(mask[..., None], res.out.to(h.dtype), h)
            if isinstance(out, torch.Tensor):
                return new
            if isinstance(out, (tuple, list)):
                return type(out)((new, *out[1:])) if isinstance(out, list) else (new, *out[1:])
            out[next(iter(out.keys()))] = new
            return out

        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _check_generate(model, att, kw, real, axis, layers, taus, checks, rows=None):
    if not model.can_generate() or getattr(model.config, "is_encoder_decoder", False):
        checks.append("generate: not a generating decoder")
        return
    if rows is not None:
        for r in rows:
            one = {k: v[r : r + 1] for k, v in kw.items()}
            _check_generate(model, att, one, real[r : r + 1], axis, layers, taus, checks)
        return
    gen_kw = {"input_ids": kw["input_ids"], "attention_mask": kw["attention_mask"], "max_new_tokens": NEW_TOKENS,
              "do_sample": False, "min_new_tokens": NEW_TOKENS}
    oracle = _Oracle(att._layers.blocks, layers, taus, axis, real, layers[0])
    try:
        with torch.no_grad():
            want = model.generate(**gen_kw)
    except Exception as exc:  # the model's own generate fails: nothing of ours to check
        checks.append(f"generate: the model's own generate fails ({type(exc).__name__}); not checked")
        return
    finally:
        oracle.close()
    cap = att.cap(list(layers), taus)
    mon = att.monitor([layers[0]])
    with att, torch.no_grad():
        got = model.generate(**gen_kw)
    cap.remove()
    mon.remove()
    assert torch.equal(got, want), f"capped generate {got.tolist()} != oracle {want.tolist()}"
    r = mon.readings()
    steps = SEQ + NEW_TOKENS - 1
    assert r.length == steps, f"monitor holds {r.length} positions after generate; expected {steps}"
    expect_valid = torch.cat([real, torch.ones(len(real), NEW_TOKENS - 1, dtype=torch.bool)], 1).numpy()
    assert np.array_equal(r.valid, expect_valid), f"monitor valid {r.valid.tolist()}"
    p_oracle = torch.cat(oracle.proj, 1).double().numpy() if len(oracle.proj) > 1 else oracle.proj[0].double().numpy()
    if p_oracle.shape[1] == steps:  # with a cache (one call per token)
        np.testing.assert_allclose(r.p_in[:, 0], p_oracle, rtol=1e-4, atol=1e-4)
    checks.append(f"generate: {NEW_TOKENS} capped tokens equal the oracle's; monitor one reading per token")


# ---- one family ----------------------------------------------------------------------------


def run_family(family: str, attach_kw: dict | None = None) -> Outcome:
    try:
        model = zoo.zoo_model(family)
    except Exception as exc:
        why = zoo.ZOO_UNBUILDABLE.get(family)
        if why is not None:
            return Outcome(family, "unbuildable", f"{why} ({type(exc).__name__})")
        return Outcome(family, "failed", f"cannot be built tiny: {type(exc).__name__}: {exc}"[:400])
    extra = zoo.ZOO_EXTRA.get(family, (None, None, {}, {}))[3]
    attach_kw = {**extra, **(attach_kw or {})}
    stack = attach_kw.get("stack")
    checks: list[str] = []
    try:
        try:
            d = hidden_size(model)
            att0 = Attachment(model, **attach_kw)
        except (AxisSteerError, ValueError) as exc:
            return Outcome(family, "refused", str(exc), model_class=type(model).__name__)
        n = att0.n_layers
        layers = tuple(i for i in CAPPED if i < n) or (0,)
        axis = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
        kw, real = _inputs(model, stack)
        _check_discovery(model, att0, kw, real, stack, checks)
        att = Attachment(model, axis, **attach_kw)
        taus = _check_cap_and_monitor(model, att, kw, real, axis, layers, checks)
        if family in zoo.ZOO_NO_GENERATE_CHECK:
            checks.append(f"generate: not checked ({zoo.ZOO_NO_GENERATE_CHECK[family]})")
        else:
            rows = range(len(real)) if family in zoo.ZOO_GENERATE_ROW_BY_ROW else None
            _check_generate(model, Attachment(model, axis, **attach_kw), kw, real, axis, layers, taus, checks, rows)
    except Exception as exc:
        return Outcome(family, "failed", f"{type(exc).__name__}: {exc}"[:600], checks)
    return Outcome(family, "exact", "", checks)


@pytest.mark.parametrize("family", zoo.zoo_families())
def test_family(family):
    res = run_family(family)
    if res.status == "unbuildable":
        pytest.skip(f"{family}: {res.detail}")
    expected = ZOO_REFUSED.get(family)
    if res.status == "refused":
        assert expected is not None, f"{family} was refused at attach time: {res.detail}"
        words, way_out = expected
        for w in (res.model_class, *words):
            assert w in res.detail, f"{family}: the refusal does not say {w!r}: {res.detail}"
        if way_out is not None:
            again = run_family(family, way_out)
            assert again.status == "exact", f"{family} with the way out {way_out}: {again.status}: {again.detail}"
        return
    assert res.status == "exact", f"{family}: {res.detail}\n  passed: {res.checks}"
    assert expected is None, f"{family} passes but ZOO_REFUSED expects a refusal: update the list"


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    families = [a for a in argv if a != "-v"] or zoo.zoo_families()
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    for f in families:
        t = time.perf_counter()
        res = run_family(f)
        counts[res.status] = counts.get(res.status, 0) + 1
        print(f"{res.status:11s} {f:28s} {time.perf_counter() - t:5.2f}s {res.detail[:300]}", flush=True)
        for c in res.checks if verbose else ():
            print(f"    {c}")
        if res.status == "refused" and ZOO_REFUSED.get(f, ((), None))[1] is not None:
            again = run_family(f, ZOO_REFUSED[f][1])
            print(f"  with {ZOO_REFUSED[f][1]}: {again.status} {again.detail[:200]}", flush=True)
    print(counts, f"{time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
