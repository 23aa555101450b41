"""What an intervention costs: a model with and without it, on the same inputs.

:func:`evaluate` runs every input twice — once plain, once with an
:class:`~axis_steer.runtime.hooks.Attachment` attached — and reports:

* **perplexity and per-token KL** on texts and/or conversations: negative
  log-likelihood of the scored tokens (every token of a text; the assistant
  response tokens of a conversation, found from the chat template) under each
  model, ``KL(p_plain || p_intervened)`` of the next-token distributions at the
  same positions, averaged over tokens;
* **greedy-generation agreement** on prompts: the fraction of generated
  positions where the two greedy continuations agree (up to and including the
  first disagreement, the rest counted as disagreeing), and how many
  continuations are identical;
* **multiple-choice accuracy** from a JSONL of ``{"question", "choices",
  "answer"}`` (answer = index of the right choice), each choice scored by the
  log-likelihood of its tokens after the question (summed, and per token);
* **instruction following** on verifiable instructions
  (:mod:`axis_steer.pipeline.instructions`): the fraction of prompts whose
  greedy reply passes every check, plain and intervened;
* **how often and how hard the caps fired** per capped layer: the fraction of
  real tokens whose projection was moved and the mean size of the move
  (``p_out - p_in``, residual-stream units), on the scored texts.

Every comparison is also kept **per item** (a text, a conversation, a prompt,
a question, an instruction: :attr:`EvalReport.items`), and each headline
figure gets a paired bootstrap interval over those items
(:mod:`axis_steer.pipeline.stats`, seeded) with a plain statement of whether
the change is distinguishable from zero at the sample size used
(:attr:`EvalReport.intervals`, :meth:`EvalReport.verdicts`). Perplexity is
resampled by whole conversations (a ratio of summed log-likelihoods to summed
tokens), never by token.

The result is an :class:`EvalReport`: a printable table, a JSON report and
plots. The CLI is ``axis-steer eval``.

:func:`compare_interventions` sets several conditions side by side on the
same inputs — no caps, always-on caps, caps under a drift policy — on default
prompts (how often the caps fire, whether the greedy reply changes), role
prompts and drift conversations (a score of the replies: is the persona
held), with bootstrap intervals and paired differences between conditions
(:mod:`axis_steer.pipeline.stats`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from axis_steer.errors import AxisSteerError
from axis_steer.pipeline.batching import input_device, pad_batch, pad_id
from axis_steer.pipeline.instructions import check_reply
from axis_steer.pipeline.replies import (
    as_messages,
    converse,
    greedy_ids,
    greedy_replies,
    paired_replies,
)
from axis_steer.pipeline.sampling import eos_ids
from axis_steer.pipeline.spans import prompt_ids, render_with_spans
from axis_steer.pipeline.stats import (
    Interval,
    bootstrap,
    mean_interval,
    paired_difference,
    ratio_change,
)
from axis_steer.runtime.checks import as_positive_int, show
from axis_steer.runtime.formats import finite_or_none, iter_jsonl
from axis_steer.runtime.hooks import Attachment
from axis_steer.runtime.steps import CLAMP


@dataclass
class LMScores:
    """Language-modelling comparison on one set of inputs."""

    tokens: int = 0
    nll_plain: float = 0.0  #: mean negative log-likelihood per scored token (nats)
    nll_intervened: float = 0.0
    kl_mean: float = 0.0  #: mean per-token KL(plain || intervened), nats
    kl_p95: float = 0.0
    kl_max: float = 0.0

    @property
    def ppl_plain(self) -> float:
        return math.exp(self.nll_plain) if self.tokens else math.nan

    @property
    def ppl_intervened(self) -> float:
        return math.exp(self.nll_intervened) if self.tokens else math.nan

    @property
    def ppl_change(self) -> float:
        """Relative change of perplexity (0.01 = 1% worse)."""
        return self.ppl_intervened / self.ppl_plain - 1.0 if self.tokens else math.nan


@dataclass
class GenerationAgreement:
    prompts: int = 0
    positions: int = 0
    agreement: float = math.nan  #: fraction of generated positions that agree
    identical: float = math.nan  #: fraction of prompts with identical continuations


@dataclass
class MCScores:
    questions: int = 0
    accuracy_plain: float = math.nan
    accuracy_intervened: float = math.nan
    accuracy_plain_norm: float = math.nan  #: scoring by mean log-likelihood per token
    accuracy_intervened_norm: float = math.nan
    answer_changed: float = math.nan  #: fraction of questions whose pick changed


@dataclass
class InstructionScores:
    prompts: int = 0
    followed_plain: float = math.nan  #: fraction of prompts whose reply passes every check
    followed_intervened: float = math.nan
    checks_plain: float = math.nan  #: fraction of single checks passed
    checks_intervened: float = math.nan


@dataclass
class Firing:
    layer: int
    rate: float  #: fraction of real tokens where a cap moved the projection
    mean_shift: float  #: mean p_out - p_in over those tokens
    max_shift: float


@dataclass
class EvalReport:
    texts: LMScores | None = None
    conversations: LMScores | None = None
    generation: GenerationAgreement | None = None
    multiple_choice: MCScores | None = None
    instructions: InstructionScores | None = None
    firing: list[Firing] = field(default_factory=list)
    kl_per_token: list[float] = field(default_factory=list, repr=False)
    #: per item, plain and intervened: {"conversations": [{"tokens", "nll_plain", ...}], "prompts": [...], ...}
    items: dict = field(default_factory=dict, repr=False)
    #: headline changes with paired bootstrap intervals (see :func:`intervals`)
    intervals: dict[str, Interval] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("texts", "conversations"):
            s = getattr(self, key)
            if s is not None:
                d[key].update(ppl_plain=s.ppl_plain, ppl_intervened=s.ppl_intervened, ppl_change=s.ppl_change)
        d.pop("kl_per_token")
        d["intervals"] = {k: v.to_dict() for k, v in self.intervals.items()}
        d["verdicts"] = self.verdicts()
        return d

    def verdicts(self) -> list[str]:
        """One plain sentence per interval: the change, its interval, and
        whether it is distinguishable from no change at this sample size."""
        return [_VERDICTS[k](v) for k, v in self.intervals.items() if k in _VERDICTS]

    def save(self, folder: str | Path, *, plots: bool = True) -> list[Path]:
        """Writes ``report.json`` (and ``firing.png``, ``kl.png``) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = [folder / "report.json"]
        out[0].write_text(json.dumps(finite_or_none(self.to_dict()), indent=1))
        if plots:
            out += self.plot(folder)
        return out

    def plot(self, folder: str | Path) -> list[Path]:
        from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

        folder = Path(folder)
        paths = []

        def figure(name: str, xlabel: str, ylabel: str, title: str, draw: Any) -> None:
            fig = Figure(figsize=(6, 3))
            ax = fig.subplots()
            draw(ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            fig.tight_layout()
            paths.append(folder / name)
            fig.savefig(paths[-1], dpi=120)

        if self.firing:
            layers, rates = [str(f.layer) for f in self.firing], [100 * f.rate for f in self.firing]
            figure("firing.png", "layer", "tokens capped (%)", "How often the cap fired",
                   lambda ax: ax.bar(layers, rates, color="tab:red"))
        if self.kl_per_token:
            kl = np.log10(np.maximum(np.asarray(self.kl_per_token), 1e-12))
            figure("kl.png", "log10 KL(plain || intervened) per token", "tokens", "Per-token divergence",
                   lambda ax: ax.hist(kl, bins=50, color="tab:blue"))
        return paths

    def __str__(self) -> str:
        lines = ["quantity                          plain   intervened   change"]
        for name, s in (("texts", self.texts), ("conversations", self.conversations)):
            if s is not None and s.tokens:
                lines.append(
                    f"perplexity ({name}, {s.tokens} tok)".ljust(32)
                    + f"{s.ppl_plain:>7.3f}   {s.ppl_intervened:>10.3f}   {100 * s.ppl_change:+6.2f}%"
                )
                lines.append(f"  KL per token mean / p95 / max   {s.kl_mean:.2e} / {s.kl_p95:.2e} / {s.kl_max:.2e}")
        if self.generation is not None and self.generation.prompts:
            g = self.generation
            lines.append(
                f"greedy agreement ({g.prompts} prompts)".ljust(32)
                + f"{100 * g.agreement:>7.1f}%  identical {100 * g.identical:.1f}%"
            )
        def rates(name: str, plain: float, intervened: float) -> str:
            return (
                name.ljust(32) + f"{100 * plain:>6.1f}%   {100 * intervened:>9.1f}%   "
                f"{100 * (intervened - plain):+6.1f} pt"
            )

        if self.multiple_choice is not None and self.multiple_choice.questions:
            m = self.multiple_choice
            lines.append(rates(f"MC accuracy ({m.questions} q)", m.accuracy_plain, m.accuracy_intervened))
        if self.instructions is not None and self.instructions.prompts:
            m = self.instructions
            lines.append(rates(f"instructions followed ({m.prompts})", m.followed_plain, m.followed_intervened))
        for f in self.firing:
            lines.append(f"cap fired at layer {f.layer}".ljust(32) + f"{100 * f.rate:>6.1f}% of tokens, mean shift {f.mean_shift:.3f}")
        verdicts = self.verdicts()
        if verdicts:
            lines.append("with 95% intervals (paired bootstrap over items):")
            lines += ["  " + v for v in verdicts]
        return "\n".join(lines)


# ---- scoring helpers ------------------------------------------------------------------------


@torch.no_grad()
def _logprobs(model, ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
    """log p(next token) at every position: (batch, seq - 1, vocab) float32."""
    logits = model(input_ids=ids, attention_mask=am).logits[:, :-1].float()
    return F.log_softmax(logits, dim=-1)


def _lm_pass(model, att: Attachment, items: list[tuple[list[int], list[bool]]], pad: int, batch_size: int):
    """Per scored token: nll plain, nll intervened, KL, and the item it belongs
    to. items: (ids, scored mask per position)."""
    nll_p, nll_i, kls, owner = [], [], [], []
    dev = input_device(model)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, am = pad_batch([c[0] for c in chunk], pad, side="right", device=dev)
        score = torch.zeros(ids.shape, dtype=torch.bool)
        for i, (_, m) in enumerate(chunk):
            score[i, : len(m)] = torch.as_tensor(m)
        target_mask = score[:, 1:].to(dev)  # token t scored from position t-1
        targets = ids[:, 1:]
        lp = _logprobs(model, ids, am)
        with att:
            lq = _logprobs(model, ids, am)
        sel = target_mask
        nll_p.append(-lp.gather(-1, targets[..., None])[..., 0][sel].cpu())
        nll_i.append(-lq.gather(-1, targets[..., None])[..., 0][sel].cpu())
        kl = (lp.exp() * (lp - lq)).sum(-1)
        kls.append(kl[sel].clamp(min=0).cpu())
        rows = torch.arange(start, start + len(chunk))[:, None].expand_as(score[:, 1:])
        owner.append(rows[sel.cpu()])
    cat = lambda xs: torch.cat(xs).double().numpy() if xs else np.zeros(0)  # noqa: E731
    own = torch.cat(owner).numpy() if owner else np.zeros(0, dtype=np.int64)
    return cat(nll_p), cat(nll_i), cat(kls), own


def _per_item_lm(nll_p: np.ndarray, nll_i: np.ndarray, kl: np.ndarray, owner: np.ndarray, n: int) -> list[dict]:
    """Per item: scored tokens, summed nll plain and intervened, summed KL."""
    count = np.bincount(owner, minlength=n)
    sp = np.bincount(owner, weights=nll_p, minlength=n)
    si = np.bincount(owner, weights=nll_i, minlength=n)
    sk = np.bincount(owner, weights=kl, minlength=n)
    return [
        {"tokens": int(count[j]), "nll_plain": float(sp[j]), "nll_intervened": float(si[j]), "kl": float(sk[j])}
        for j in range(n)
    ]


def _lm_scores(nll_p: np.ndarray, nll_i: np.ndarray, kl: np.ndarray) -> LMScores:
    if nll_p.size == 0:
        return LMScores()
    return LMScores(
        tokens=int(nll_p.size),
        nll_plain=float(nll_p.mean()),
        nll_intervened=float(nll_i.mean()),
        kl_mean=float(kl.mean()),
        kl_p95=float(np.quantile(kl, 0.95)),
        kl_max=float(kl.max()),
    )


# ---- the evaluation ---------------------------------------------------------------------------


def evaluate(
    model: Any,
    tokenizer: Any,
    attachment: Attachment,
    *,
    texts: Sequence[str] | None = None,
    conversations: Sequence[Sequence[dict]] | None = None,
    prompts: Sequence[Sequence[dict] | str] | None = None,
    multiple_choice: Sequence[dict] | None = None,
    instructions: Sequence[dict] | None = None,
    max_new_tokens: int = 32,
    instruction_tokens: int = 128,
    batch_size: int = 8,
    generate_batch_size: int | None = None,
    max_length: int = 1024,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = False,
) -> EvalReport:
    """Compares ``model`` with and without ``attachment`` (configured but not
    attached; it is attached for the intervened passes only).

    ``texts``: plain strings (every token scored). ``conversations``: chat
    message lists ending with an assistant turn (the assistant tokens scored).
    ``prompts``: chat message lists (or strings, sent as one user turn) for
    greedy generation. ``multiple_choice``: dicts with ``question``,
    ``choices`` and ``answer``. ``instructions``: verifiable-instruction items
    (:func:`axis_steer.pipeline.instructions.load_instructions`), answered
    greedily with ``instruction_tokens`` new tokens. At least one of them is
    required. ``n_boot`` and ``seed`` set the bootstrap of the intervals;
    ``progress`` prints each part as it starts. ``batch_size`` is the
    scoring passes' batch; greedy replies are generated in batches of
    ``generate_batch_size`` (default ``2 * batch_size``), each prompt plain and
    intervened in the same batch (per-row control of the attachment's
    interventions)."""
    if not any((texts, conversations, prompts, multiple_choice, instructions)):
        raise ValueError(
            "evaluate: give at least one of texts, conversations, prompts, multiple_choice, instructions"
        )
    if not isinstance(attachment, Attachment):
        raise TypeError(f"attachment = {show(attachment)} (expected an axis_steer Attachment)")
    if attachment.attached:
        raise AxisSteerError("evaluate: pass the attachment detached; it is attached for the intervened passes")
    batch_size = as_positive_int(batch_size, "batch_size")
    max_new_tokens = as_positive_int(max_new_tokens, "max_new_tokens")
    max_length = as_positive_int(max_length, "max_length")
    pad = pad_id(tokenizer)
    generate_batch_size = as_positive_int(generate_batch_size or 2 * batch_size, "generate_batch_size")
    instruction_tokens = as_positive_int(instruction_tokens, "instruction_tokens")
    report = EvalReport(
        metadata={
            "max_new_tokens": max_new_tokens,
            "instruction_tokens": instruction_tokens,
            "batch_size": batch_size,
            "generate_batch_size": generate_batch_size,
            "n_boot": n_boot,
            "seed": seed,
        }
    )
    capped = sorted({layer for layer, p in attachment._programs.items() if CLAMP in p.ops})
    monitor = None
    if capped and attachment.axis is not None:
        monitor = attachment.monitor(capped)
    firing_num = {layer: 0.0 for layer in capped}
    firing_shift = {layer: [] for layer in capped}
    firing_den = 0
    all_kl = []

    def part(name: str, n: int) -> None:
        if progress:
            print(f"eval: {name} ({n}, plain and intervened)", flush=True)

    try:
        if texts:
            part("texts", len(texts))
            items = []
            for t in texts:
                ids = tokenizer(t, add_special_tokens=True)["input_ids"][:max_length]
                items.append((ids, [True] * len(ids)))
            nll_p, nll_i, kl, owner = _lm_pass(model, attachment, items, pad, batch_size)
            report.texts = _lm_scores(nll_p, nll_i, kl)
            report.items["texts"] = _per_item_lm(nll_p, nll_i, kl, owner, len(items))
            all_kl.append(kl)
            if monitor is not None:
                firing_den += _collect_firing(model, attachment, monitor, items, pad, batch_size, firing_num, firing_shift)
        if conversations:
            part("conversations", len(conversations))
            items = []
            for conv in conversations:
                rc = render_with_spans(tokenizer, conv)
                ids = list(rc.input_ids)[:max_length]
                mask = [False] * len(ids)
                for a, b in rc.spans:
                    for t in range(a, min(b, len(ids))):
                        mask[t] = True
                items.append((ids, mask))
            nll_p, nll_i, kl, owner = _lm_pass(model, attachment, items, pad, batch_size)
            report.conversations = _lm_scores(nll_p, nll_i, kl)
            report.items["conversations"] = _per_item_lm(nll_p, nll_i, kl, owner, len(items))
            all_kl.append(kl)
            if monitor is not None:
                firing_den += _collect_firing(model, attachment, monitor, items, pad, batch_size, firing_num, firing_shift)
        if prompts:
            part("greedy prompts", len(prompts))
            report.generation, report.items["prompts"] = _agreement(
                model, tokenizer, attachment, prompts, max_new_tokens, generate_batch_size
            )
        if multiple_choice:
            part("multiple-choice questions", len(multiple_choice))
            report.multiple_choice, report.items["multiple_choice"] = _multiple_choice(
                model, tokenizer, attachment, multiple_choice, batch_size, pad
            )
        if instructions:
            part("verifiable instructions", len(instructions))
            report.instructions, report.items["instructions"] = _instructions(
                model, tokenizer, attachment, instructions, instruction_tokens, generate_batch_size
            )
    finally:
        if monitor is not None:
            monitor.remove()
    for layer in capped:
        shifts = np.concatenate(firing_shift[layer]) if firing_shift[layer] else np.zeros(0)
        report.firing.append(
            Firing(
                layer=layer,
                rate=firing_num[layer] / firing_den if firing_den else math.nan,
                mean_shift=float(shifts.mean()) if shifts.size else 0.0,
                max_shift=float(shifts.max()) if shifts.size else 0.0,
            )
        )
    if all_kl:
        report.kl_per_token = np.concatenate(all_kl).tolist()
    report.intervals = intervals(report.items, n_boot=n_boot, seed=seed)
    return report


# ---- intervals ----------------------------------------------------------------------------------

_VERDICTS = {
    "ppl_change_conversations": lambda iv: iv.verdict(
        "the intervention changes perplexity on conversations by", scale=100, digits=2, unit="%"
    ),
    "ppl_change_texts": lambda iv: iv.verdict("the intervention changes perplexity on texts by", scale=100, digits=2, unit="%"),
    "kl_conversations": lambda iv: f"KL(plain || intervened) per token on conversations {iv.format(1, 5, signed=False)} "
    f"(95% interval, n={iv.n} conversations; positive by construction: its size is the measurement)",
    "agreement": lambda iv: iv.verdict(
        "greedy agreement is", scale=100, digits=1, unit="%", null=1.0, null_text="100% (no change)", signed=False
    ),
    "identical": lambda iv: iv.verdict(
        "identical greedy continuations:", scale=100, digits=1, unit="%", null=1.0, null_text="100% (no change)", signed=False
    ),
    "mc_accuracy_change": lambda iv: iv.verdict(
        "the intervention changes multiple-choice accuracy by", scale=100, digits=1, unit=" pt"
    ),
    "mc_answer_changed": lambda iv: iv.verdict(
        "multiple-choice picks changed on", scale=100, digits=1, unit="%", signed=False
    ),
    "instructions_change": lambda iv: iv.verdict(
        "the intervention changes the instruction-following rate by", scale=100, digits=1, unit=" pt"
    ),
}


def intervals(items: dict, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Interval]:
    """Paired bootstrap intervals of the headline changes from per-item results
    (:attr:`EvalReport.items`): perplexity change (ratio of summed nll to
    summed tokens, by conversation), mean KL per token, greedy agreement
    (agreeing positions over positions, by prompt), identical continuations,
    multiple-choice accuracy change and changed picks, instruction-following change."""
    kw = {"n_boot": n_boot, "seed": seed}
    out: dict[str, Interval] = {}
    for key in ("conversations", "texts"):
        rows = [r for r in items.get(key, []) if r["tokens"]]
        if rows:
            col = {name: [r[name] for r in rows] for name in ("nll_plain", "nll_intervened", "tokens", "kl")}
            out[f"ppl_change_{key}"] = ratio_change(
                col["nll_plain"], col["nll_intervened"], col["tokens"], transform=np.exp, **kw
            )
            if key == "conversations":
                out["kl_conversations"] = bootstrap(
                    {"kl": col["kl"], "n": col["tokens"]}, lambda c: c["kl"].sum(-1) / c["n"].sum(-1), **kw
                )
    rows = items.get("prompts", [])
    if rows:
        out["agreement"] = bootstrap(
            {"a": [r["agree"] for r in rows], "n": [r["positions"] for r in rows]},
            lambda c: c["a"].sum(-1) / np.maximum(c["n"].sum(-1), 1),
            **kw,
        )
        out["identical"] = mean_interval([float(r["identical"]) for r in rows], **kw)
    rows = items.get("multiple_choice", [])
    if rows:
        out["mc_accuracy_change"] = paired_difference(
            [float(r["correct_plain"]) for r in rows], [float(r["correct_intervened"]) for r in rows], **kw
        )
        out["mc_answer_changed"] = mean_interval([float(r["pick_plain"] != r["pick_intervened"]) for r in rows], **kw)
    rows = items.get("instructions", [])
    if rows:
        out["instructions_change"] = paired_difference(
            [float(r["followed_plain"]) for r in rows], [float(r["followed_intervened"]) for r in rows], **kw
        )
    return out


def _collect_firing(model, att, monitor, items, pad, batch_size, num, shifts) -> int:
    """Runs the intervened model once more with the monitor to count firing."""
    dev = input_device(model)
    total = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, am = pad_batch([c[0] for c in chunk], pad, side="right", device=dev)
        with att, torch.no_grad():
            model(input_ids=ids, attention_mask=am)
        r = monitor.readings()
        total += int(r.valid.sum())
        for i, layer in enumerate(r.layers):
            fired = r.fired[:, i] & r.valid
            num[layer] += float(fired.sum())
            shifts[layer].append((r.p_out[:, i] - r.p_in[:, i])[fired])
    return total


def _paired_ids(model, tokenizer, att, prompts, max_new_tokens, batch_size):
    """Greedy replies without and with ``att``'s interventions, generated
    together (each prompt twice, the interventions on for the second copy's
    rows only), as token ids up to and including the first end of turn."""
    plain, inter = paired_replies(
        model, tokenizer, prompts, att, list(att.interventions), max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    end = (eos_ids(model, tokenizer) or [pad_id(tokenizer)])[0]

    def ids(r):
        return [x + [end] if e else x for x, e in zip(r.ids, r.ended)]

    return ids(plain), ids(inter), plain, inter


def _agreement(model, tokenizer, att, prompts, max_new_tokens, batch_size):
    plain, inter, _, _ = _paired_ids(model, tokenizer, att, prompts, max_new_tokens, batch_size)
    rows = []
    for a, b in zip(plain, inter):
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        rows.append({"agree": k, "positions": max(len(a), len(b)), "identical": a == b})
    agree = sum(r["agree"] for r in rows)
    positions = sum(r["positions"] for r in rows)
    summary = GenerationAgreement(
        prompts=len(prompts),
        positions=positions,
        agreement=agree / positions if positions else math.nan,
        identical=float(np.mean([r["identical"] for r in rows])) if rows else math.nan,
    )
    return summary, rows


def _instructions(model, tokenizer, att, items, max_new_tokens, batch_size):
    prompts = [it["prompt"] for it in items]
    _, _, plain, inter = _paired_ids(model, tokenizer, att, prompts, max_new_tokens, batch_size)
    rows = []
    for it, a, b in zip(items, plain.texts, inter.texts):
        ca, cb = check_reply(it, a), check_reply(it, b)
        rows.append(
            {
                "id": it.get("id"),
                "followed_plain": all(ca),
                "followed_intervened": all(cb),
                "checks_plain": ca,
                "checks_intervened": cb,
                "reply_plain": a,
                "reply_intervened": b,
            }
        )
    n_checks = sum(len(r["checks_plain"]) for r in rows)
    summary = InstructionScores(
        prompts=len(rows),
        followed_plain=float(np.mean([r["followed_plain"] for r in rows])),
        followed_intervened=float(np.mean([r["followed_intervened"] for r in rows])),
        checks_plain=sum(sum(r["checks_plain"]) for r in rows) / n_checks,
        checks_intervened=sum(sum(r["checks_intervened"]) for r in rows) / n_checks,
    )
    return summary, rows


def load_multiple_choice(path: str | Path) -> list[dict]:
    """Reads a multiple-choice JSONL (``question``, ``choices`` list, ``answer``
    index), with errors naming the file and line."""
    out = []
    for lineno, obj in iter_jsonl(path):
        ch = obj.get("choices") if isinstance(obj, dict) else None
        ans = obj.get("answer") if isinstance(obj, dict) else None
        if not isinstance(ch, list) or len(ch) < 2 or not isinstance(obj.get("question"), str):
            raise ValueError(f"{path}:{lineno}: expected 'question' (text) and 'choices' (a list of 2 or more)")
        if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(ch):
            raise ValueError(f"{path}:{lineno}: 'answer' = {ans!r} (expected an index into choices)")
        out.append(obj)
    return out


@torch.no_grad()
def _choice_logliks(model, tokenizer, questions, batch_size, pad) -> list[list[tuple[float, int]]]:
    items = []  # (question index, ids, n_choice_tokens)
    for qi, q in enumerate(questions):
        head = prompt_ids(tokenizer, [{"role": "user", "content": q["question"]}])
        for c in q["choices"]:
            tail = tokenizer(" " + str(c).strip(), add_special_tokens=False)["input_ids"]
            items.append((qi, head + tail, len(tail)))
    dev = input_device(model)
    scores: list[list[tuple[float, int]]] = [[] for _ in questions]
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, am = pad_batch([c[1] for c in chunk], pad, side="right", device=dev)
        lp = _logprobs(model, ids, am)
        tok = lp.gather(-1, ids[:, 1:, None])[..., 0]
        for i, (qi, seq, n) in enumerate(chunk):
            L = len(seq)
            scores[qi].append((float(tok[i, L - 1 - n : L - 1].sum()), n))
    return scores


def _multiple_choice(model, tokenizer, att, questions, batch_size, pad):
    plain = _choice_logliks(model, tokenizer, questions, batch_size, pad)
    with att:
        inter = _choice_logliks(model, tokenizer, questions, batch_size, pad)

    def picks(scores, norm):
        return [int(np.argmax([s / (n if norm else 1) for s, n in row])) for row in scores]

    def acc(p):
        return float(np.mean([a == q["answer"] for a, q in zip(p, questions)]))

    pp, pi = picks(plain, False), picks(inter, False)
    rows = [
        {
            "pick_plain": a,
            "pick_intervened": b,
            "correct_plain": a == q["answer"],
            "correct_intervened": b == q["answer"],
        }
        for a, b, q in zip(pp, pi, questions)
    ]
    summary = MCScores(
        questions=len(questions),
        accuracy_plain=acc(pp),
        accuracy_intervened=acc(pi),
        accuracy_plain_norm=acc(picks(plain, True)),
        accuracy_intervened_norm=acc(picks(inter, True)),
        answer_changed=float(np.mean([a != b for a, b in zip(pp, pi)])),
    )
    return summary, rows


# ---- no caps / always-on caps / latched caps ----------------------------------------------------


@dataclass
class ArmResults:
    """One condition of :func:`compare_interventions`, per item and as
    intervals over items (:class:`~axis_steer.pipeline.stats.Interval`).

    On default prompts: ``fired`` (per prompt, the fraction of the real tokens
    of prompt and plain greedy reply on which a cap moved the projection at
    any capped layer), ``touched`` (1 where it moved any), ``changed`` (1
    where the greedy reply differs from the plain model's), ``latched`` (1
    where a drift policy of the attachment latched). On role prompts and drift
    conversations: ``role_prompt`` / ``drift``, the mean ``score`` of the
    replies (per prompt; per conversation over its turns)."""

    name: str
    per_item: dict[str, list[float]] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)


@dataclass
class Comparison:
    """What :func:`compare_interventions` returns: ``arms`` in the order given
    and ``differences[(a, b)][metric]``, the paired interval of ``a - b`` on
    the same items, for each pair of arms."""

    arms: list[ArmResults]
    differences: dict[tuple[str, str], dict[str, Interval]] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def arm(self, name: str) -> ArmResults:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"{name!r} (arms: {[a.name for a in self.arms]})")

    def to_dict(self) -> dict:
        return {
            "metadata": self.metadata,
            "arms": {a.name: {"intervals": {m: asdict(v) for m, v in a.intervals.items()}, "per_item": a.per_item}
                     for a in self.arms},
            "differences": {f"{a} - {b}": {m: asdict(v) for m, v in d.items()} for (a, b), d in self.differences.items()},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(finite_or_none(self.to_dict()), indent=1))
        return path

    def __str__(self) -> str:
        metrics = [m for m in COMPARE_METRICS if any(m in a.intervals for a in self.arms)]
        lines = ["mean [95% bootstrap interval] per condition".ljust(24) + "".join(f"{a.name:>26}" for a in self.arms)]
        for m in metrics:
            lines.append(f"{COMPARE_METRICS[m]:<24}" + "".join(f"{str(a.intervals.get(m, '-')):>26}" for a in self.arms))
        for (a, b), d in self.differences.items():
            for m in metrics:
                if m in d:
                    lines.append(f"  {a} - {b}, {COMPARE_METRICS[m]}: {d[m]} (paired)")
        return "\n".join(lines)


#: The metrics of a comparison, with their labels.
COMPARE_METRICS = {
    "fired": "default: tokens capped",
    "touched": "default: any token capped",
    "latched": "default: latched",
    "changed": "default: reply changed",
    "role_prompt": "role prompts: score",
    "drift": "drift: score",
}


def _firing_per_row(model, att: Attachment, monitor, seqs: list[list[int]], pad: int, batch_size: int):
    """Per sequence, teacher forced with ``att``: the fraction of its tokens on
    which a cap moved the projection at any monitored layer, and whether any
    of the attachment's drift policies latched on it."""
    dev = input_device(model)
    frac, latched = [], []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, am = pad_batch(chunk, pad, side="right", device=dev)
        with att, torch.no_grad():
            model(input_ids=ids, attention_mask=am)
        r = monitor.readings()
        moved = r.fired.any(1) & r.valid
        frac.extend((moved.sum(1) / np.maximum(r.valid.sum(1), 1)).tolist())
        lat = np.zeros(r.batch, bool)
        for pr in r.policies:
            lat |= pr.latched_rows()
        latched.extend(lat.astype(float).tolist())
    return frac, latched


def compare_interventions(
    model: Any,
    tokenizer: Any,
    arms: dict[str, Attachment | None],
    *,
    default_prompts: Sequence[Sequence[dict] | str],
    role_prompts: Sequence[Sequence[dict] | str] = (),
    drift: Sequence[dict] = (),
    score: Callable[[str], float] | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Several conditions on the same inputs: typically ``{"no caps": None,
    "always-on": capped, "latched": capped under a drift policy}`` (detached
    attachments; ``None``: the plain model).

    ``default_prompts`` (default-Assistant chat prompts): how often and how
    much the caps fire and whether the greedy reply changes (goal of a latch:
    near zero). ``role_prompts`` (role system prompts) and ``drift`` (dicts
    with ``system`` and ``user_turns``, replied to turn by turn): ``score`` of
    the replies, a callable from a reply's text to a number (for example how
    much role vocabulary it holds; lower = persona held better with such a
    score). Every result per item, as a bootstrap interval over items, and
    paired differences between arms on the same items
    (:mod:`axis_steer.pipeline.stats`). See :class:`ArmResults`."""
    if not isinstance(arms, dict) or not arms:
        raise TypeError(f"arms = {show(arms)} (expected a dict of names to Attachments or None, e.g. "
                        "{'no caps': None, 'always-on': att})")
    for name, att in arms.items():
        if not isinstance(name, str):
            raise TypeError(f"arms: key {show(name)} (expected a condition's name, a str)")
        if att is not None and not isinstance(att, Attachment):
            raise TypeError(f"arms[{name!r}] = {show(att)} (expected an axis_steer Attachment, or None for no caps)")
        if att is not None and att.attached:
            raise AxisSteerError(f"arms[{name!r}]: pass the attachment detached; it is attached for its passes")
    if not default_prompts:
        raise ValueError("default_prompts: empty (expected default-Assistant prompts, the conditions' shared inputs)")
    if (role_prompts or drift) and score is None:
        raise ValueError("score: needed for role_prompts and drift (expected a callable from a reply's text to a number)")
    if score is not None and not callable(score):
        raise TypeError(f"score = {show(score)} (expected a callable from a reply's text to a number)")
    for i, d in enumerate(drift):
        if not isinstance(d, dict) or not isinstance(d.get("user_turns"), (list, tuple)) or not d["user_turns"]:
            raise ValueError(f"drift[{i}] = {show(d)} (expected a dict with 'user_turns', a non-empty list, and "
                             "optionally 'system')")
    max_new_tokens = as_positive_int(max_new_tokens, "max_new_tokens")
    batch_size = as_positive_int(batch_size, "batch_size")
    pad = pad_id(tokenizer)
    prompts = list(default_prompts)
    plain = greedy_ids(model, tokenizer, prompts, max_new_tokens, batch_size, pad)
    seqs = [prompt_ids(tokenizer, as_messages(p)) + [t for t in r if t != pad] for p, r in zip(prompts, plain)]
    results = []
    for name, att in arms.items():
        res = ArmResults(name)
        if att is None:
            ids = plain
            res.per_item["fired"] = res.per_item["touched"] = res.per_item["latched"] = [0.0] * len(prompts)
        else:
            capped = sorted({layer for layer, p in att._programs.items() if CLAMP in p.ops})
            if not capped or att.axis is None:
                raise ValueError(f"arms[{name!r}]: no caps on the axis to compare (expected an Attachment with "
                                 "att.cap or att.cap_config, made with the axis)")
            mon = att.monitor(capped)
            try:
                frac, latched = _firing_per_row(model, att, mon, seqs, pad, batch_size)
            finally:
                mon.remove()
            res.per_item["fired"] = frac
            res.per_item["touched"] = [float(f > 0) for f in frac]
            res.per_item["latched"] = latched
            with att:
                ids = greedy_ids(model, tokenizer, prompts, max_new_tokens, batch_size, pad)
        res.per_item["changed"] = [float(a != b) for a, b in zip(ids, plain)]
        if role_prompts:
            replies = greedy_replies(model, tokenizer, list(role_prompts), att, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size)
            res.per_item["role_prompt"] = [float(score(t)) for t in replies]
        if drift:
            res.per_item["drift"] = [
                float(np.mean([score(t) for t in converse(model, tokenizer, d.get("system", ""), list(d["user_turns"]),
                                                           att, max_new_tokens=max_new_tokens)[0]]))
                for d in drift
            ]
        res.intervals = {m: mean_interval(v, n_boot=n_boot, seed=seed) for m, v in res.per_item.items()}
        results.append(res)
    out = Comparison(results, metadata={"max_new_tokens": max_new_tokens, "n_boot": n_boot, "seed": seed,
                                        "default_prompts": len(prompts), "role_prompts": len(role_prompts),
                                        "drift": len(drift)})
    for i, a in enumerate(results):
        for b in results[i + 1 :]:
            out.differences[(b.name, a.name)] = {
                m: paired_difference(a.per_item[m], b.per_item[m], n_boot=n_boot, seed=seed)
                for m in b.per_item
                if m in a.per_item
            }
    return out
