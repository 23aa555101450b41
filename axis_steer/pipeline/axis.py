"""Step 4: role vectors, the Assistant Axis and persona space.

From the running sums of :mod:`axis_steer.pipeline.extract`:

* a **role vector** is the mean of a role's per-response mean activations over
  the responses that pass the judge (score >= ``min_score``, default 3), and
  needs at least ``min_count`` of them (default 50, the reference's); without a
  judge every response of the role counts;
* the **default vector** is the mean over all default-role responses;
* the **axis** is ``default - mean(role vectors)`` per layer, stored raw (not
  unit norm), shape ``(n_layers, d)``, pointing toward the Assistant. Rows of
  layers that were not extracted are zero (``Axis.unit`` refuses them).

**Persona space** is a PCA of the role vectors per layer: the fraction of
variance each component explains, the cosine of PC1 with the axis (PC1's sign
is chosen so that it is >= 0) and each role's loading on the components.

Files written to the run folder::

    axis.safetensors            # formats.Axis (load with formats.load_axis)
    axis.pt                     # reference layout {"axis": (n_layers, d), "metadata": {...}}
    role_vectors.safetensors    # role_vectors (n_roles, L, d), default (L, d), counts
    persona_space.safetensors   # PCA per extracted layer (see PersonaSpace)
    vectors/{role}.pt           # reference per-role vectors, only with reference_vectors=True
    plots/variance_explained.png, plots/pc1_pc2_layer{L}.png
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from axis_steer.pipeline import _dist
from axis_steer.pipeline.extract import load_sums
from axis_steer.pipeline.judge import judge_info, load_run_scores
from axis_steer.pipeline.roles import DEFAULT_ROLE
from axis_steer.pipeline.runs import RunFolder
from axis_steer.runtime.checks import as_flag, as_folder, as_int, as_positive_int
from axis_steer.runtime.formats import (
    Axis,
    Fields,
    kind_path,
    load_activations,
    load_kind,
    save_tensors,
    tensor_of,
)

__all__ = [
    "AxisSummary",
    "PersonaSpace",
    "RoleVectors",
    "axis_from_vectors",
    "compute_axis",
    "compute_role_vectors",
    "load_persona_space",
    "load_role_vectors",
    "persona_space",
    "plot_persona_space",
]


@dataclass
class RoleVectors:
    """Role vectors and the default vector of a run, over the extracted layers.

    Attributes:
        names: the roles kept, sorted.
        vectors: float32 ``(len(names), len(layers), d)``.
        counts: responses averaged per role.
        default: float32 ``(len(layers), d)``, the default-role mean.
        default_count: default responses averaged.
        layers: the extracted layer indices (rows of ``vectors`` and ``default``).
        n_layers: the model's number of layers.
        metadata: judge use, thresholds, skipped roles and why, model.
    """

    names: list[str]
    vectors: Any
    counts: list[int]
    default: Any
    default_count: int
    layers: list[int]
    n_layers: int
    metadata: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.default.shape[-1])

    def save(self, path: str | Path) -> Path:
        meta = dict(self.metadata)
        meta.update(
            kind="role_vectors",
            roles=self.names,
            counts=self.counts,
            default_count=self.default_count,
            layers=self.layers,
            n_layers=self.n_layers,
            hidden_size=self.hidden_size,
        )
        vec = (
            self.vectors
            if len(self.names)
            else torch.zeros((0, len(self.layers), self.hidden_size))
        )
        return save_tensors(path, {"role_vectors": vec, "default": self.default}, meta)

    def save_reference(self, folder: str | Path) -> Path:
        """Writes the reference layout ``{folder}/{role}.pt`` = ``{"vector": (n_layers, d),
        "type": "pos_3" | "mean", "role": name}`` (rows of unextracted layers zero)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        judged = bool(self.metadata.get("judged"))
        for name, v in [(DEFAULT_ROLE, self.default), *zip(self.names, self.vectors)]:
            full = torch.zeros((self.n_layers, self.hidden_size))
            full[self.layers] = v
            kind = (
                "mean"
                if name == DEFAULT_ROLE or not judged
                else f"pos_{self.metadata.get('min_score', 3)}"
            )
            torch.save({"vector": full, "type": kind, "role": name}, folder / f"{name}.pt")
        return folder


def load_role_vectors(path: str | Path) -> RoleVectors:
    """Reads ``role_vectors.safetensors`` (a file or its run folder), checked:
    one name and one count per role vector, one layer index per row."""
    tensors, meta = load_kind(path, "role_vectors", "a role-vectors file", str(RunFolder("").role_vectors))
    where = kind_path(path, str(RunFolder("").role_vectors))
    f = Fields(meta, where)
    vecs = tensor_of(tensors, "role_vectors", where, (None, None, None))
    n_roles, n_rows, d = vecs.shape
    default = tensor_of(tensors, "default", where, (n_rows, d))
    n_layers = f.int("n_layers", min=1)
    layers = f.ints("layers", n=n_rows)
    if any(x >= n_layers for x in layers):
        raise ValueError(f"{where}: metadata 'layers' = {layers} reach past n_layers = {n_layers}")
    rest = {
        k: v
        for k, v in meta.items()
        if k not in ("roles", "counts", "default_count", "layers", "n_layers")
    }
    return RoleVectors(
        f.strs("roles", n=n_roles),
        vecs,
        f.ints("counts", n=n_roles),
        default,
        f.int("default_count"),
        layers,
        n_layers,
        rest,
    )


def compute_role_vectors(
    out_dir: str | Path,
    *,
    judge: bool | None = None,
    min_score: int = 3,
    min_count: int = 50,
    roles: Iterable[str] | None = None,
) -> RoleVectors:
    """Role vectors and the default vector from a run's activation sums.

    Args:
        out_dir: the run folder (reads ``activations/sums.safetensors`` and
            ``scores/``).
        judge: ``None`` uses scores when the run has them, ``True`` requires
            them, ``False`` ignores them (every response counts).
        min_score: keep role responses scored at least this (reference: 3).
        min_count: a role needs at least this many kept responses (reference:
            50); roles with fewer are skipped and listed in the metadata.
        roles: only these roles (default all that were extracted).

    Responses judged after extraction are filtered through the per-response
    files (``extract_activations(per_sample=...)``) when they exist.
    """
    out_dir = as_folder(out_dir, "out_dir")
    if judge is not None:
        judge = as_flag(judge, "judge")
    min_score = as_int(min_score, "min_score", min=0, max=3)
    min_count = as_positive_int(min_count, "min_count")
    if isinstance(roles, (str, bytes)):
        raise TypeError(f"roles = {roles!r} is one string (expected a list of role names, e.g. [{roles!r}])")
    run = RunFolder(out_dir)
    sums_path = run.sums
    if not sums_path.exists():
        raise FileNotFoundError(f"{sums_path}: no activation sums; run extract_activations first")
    st = load_sums(sums_path)
    n_resp = st.metadata.get("n_responses")
    n_proc = len(st.keys) + len(st.empty)
    if isinstance(n_resp, int) and n_proc < n_resp:
        warnings.warn(
            f"{sums_path}: extraction is incomplete ({n_proc} of {n_resp} responses); "
            "run extract_activations again to finish it",
            stacklevel=2,
        )
    scores = load_run_scores(out_dir)
    if judge is True and not scores:
        raise FileNotFoundError(
            f"{run.scores}: no scores (judge=True); run judge_responses first"
        )
    judged = bool(scores) if judge is None else bool(judge)
    if DEFAULT_ROLE not in st.roles():
        raise ValueError(
            f"{sums_path}: no '{DEFAULT_ROLE}' responses were extracted (the default vector needs them)"
        )
    default_sum, default_count = st.role_sum(DEFAULT_ROLE)
    wanted = [r for r in st.roles() if r != DEFAULT_ROLE]
    if roles is not None:
        asked = set(roles) - {DEFAULT_ROLE}
        missing = sorted(asked - set(wanted))
        if missing:
            raise ValueError(f"roles: {missing} have no extracted activations in {sums_path}")
        wanted = sorted(asked)
    passing = {f"score{s}" for s in range(min_score, 4)}
    names, vecs, counts, skipped = [], [], [], {}
    for role in wanted:
        if not judged:
            total, n = st.role_sum(role)
        else:
            buckets = st.buckets(role)
            if role not in scores:
                skipped[role] = "no scores"
                continue
            if "unscored" in buckets:
                total, n = _from_per_sample(out_dir, role, scores[role], min_score, st.layers)
                if total is None:
                    raise ValueError(
                        f"role {role!r}: {buckets['unscored']} responses were extracted before they were "
                        f"scored, and there are no per-response activations to filter. Run "
                        f"extract_activations(..., restart=True) now that scores exist (or extract with "
                        f"per_sample='safetensors')"
                    )
            else:
                total, n = st.role_sum(role, passing)
        if n < min_count:
            skipped[role] = (
                f"{n} responses{' passing the judge' if judged else ''} < min_count={min_count}"
            )
            continue
        names.append(role)
        vecs.append(total / n)
        counts.append(n)
    if not names:
        raise ValueError(
            f"no role has enough responses for a role vector (min_count={min_count}): "
            + "; ".join(f"{r}: {why}" for r, why in list(skipped.items())[:8])
        )
    if skipped:
        warnings.warn(
            f"{len(skipped)} roles skipped: " + "; ".join(f"{r}: {w}" for r, w in skipped.items()),
            stacklevel=2,
        )
    meta = {
        "model": st.metadata.get("model", ""),
        "judged": judged,
        "judge_sources": judge_info(out_dir).get("sources", []) if judged else [],
        "min_score": min_score if judged else None,
        "min_count": min_count,
        "skipped": skipped,
        "turns": st.metadata.get("turns"),
        "counting": (
            f"responses scored >= {min_score} by the judge"
            if judged
            else "every role response (no judge)"
        ),
    }
    return RoleVectors(
        names,
        torch.stack(vecs),
        counts,
        default_sum / default_count,
        default_count,
        st.layers,
        int(st.metadata.get("n_layers", max(st.layers) + 1)),
        meta,
    )


def _from_per_sample(
    out_dir: Path, role: str, scores: dict[str, int], min_score: int, layers: list[int]
) -> tuple[Any, int]:
    path = RunFolder(out_dir).find_per_sample(role)
    if path is None:
        return None, 0
    acts = load_activations(path)
    keep = [k for k, v in scores.items() if v >= min_score and k in acts]
    total = torch.zeros((len(layers), next(iter(acts.values())).shape[-1])) if acts else None
    for k in keep:
        total += acts[k].float()
    return total, len(keep)


def axis_from_vectors(rv: RoleVectors) -> Axis:
    """``axis[L] = default[L] - mean(role vectors)[L]`` for the extracted layers,
    zero rows elsewhere, with metadata."""
    full = torch.zeros((rv.n_layers, rv.hidden_size), dtype=torch.float32)
    full[rv.layers] = rv.default - rv.vectors.mean(0)
    meta = dict(rv.metadata)
    meta.update(
        kind="axis",
        method="default - mean(role vectors)",
        units="residual-stream units, raw (not unit norm), pointing toward the Assistant",
        layers=rv.layers,
        roles=rv.names,
        role_counts=dict(zip(rv.names, rv.counts)),
        default_count=rv.default_count,
    )
    return Axis(full, meta)


@dataclass
class PersonaSpace:
    """PCA of the role vectors per extracted layer.

    Attributes:
        names: the roles (rows of ``loadings``).
        layers: the layers analysed.
        variance_ratio: ``(len(layers), k)`` fraction of the role vectors'
            variance explained by each component.
        components: ``(len(layers), k, d)`` unit principal directions; PC1 is
            signed so that its cosine with the axis is >= 0.
        loadings: ``(len(layers), n_roles, k)`` centred role vectors on the components.
        default_loading: ``(len(layers), k)`` the default vector on the components.
        cos_pc1_axis: ``(len(layers),)`` cosine of PC1 with the axis.
        axis_projection: ``(len(layers), n_roles)`` role vectors on the unit axis.
        default_projection: ``(len(layers),)`` the default vector on the unit axis.
    """

    names: list[str]
    layers: list[int]
    variance_ratio: Any
    components: Any
    loadings: Any
    default_loading: Any
    cos_pc1_axis: Any
    axis_projection: Any
    default_projection: Any

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        meta = dict(metadata or {})
        meta.update(kind="persona_space", roles=self.names, layers=self.layers)
        return save_tensors(
            path,
            {
                "variance_ratio": self.variance_ratio,
                "components": self.components,
                "loadings": self.loadings,
                "default_loading": self.default_loading,
                "cos_pc1_axis": self.cos_pc1_axis,
                "axis_projection": self.axis_projection,
                "default_projection": self.default_projection,
            },
            meta,
        )


def load_persona_space(path: str | Path) -> PersonaSpace:
    """Reads ``persona_space.safetensors`` (a file or its run folder), checked:
    one role name per loading row, one layer per analysed layer."""
    t, meta = load_kind(path, "persona_space", "a persona-space file", str(RunFolder("").persona_space))
    where = kind_path(path, str(RunFolder("").persona_space))
    f = Fields(meta, where)
    comps = tensor_of(t, "components", where, (None, None, None))
    n_l, k, d = comps.shape
    loadings = tensor_of(t, "loadings", where, (n_l, None, k))
    n_roles = loadings.shape[1]
    return PersonaSpace(
        f.strs("roles", n=n_roles),
        f.ints("layers", n=n_l),
        tensor_of(t, "variance_ratio", where, (n_l, k)),
        comps,
        loadings,
        tensor_of(t, "default_loading", where, (n_l, k)),
        tensor_of(t, "cos_pc1_axis", where, (n_l,)),
        tensor_of(t, "axis_projection", where, (n_l, n_roles)),
        tensor_of(t, "default_projection", where, (n_l,)),
    )


def persona_space(rv: RoleVectors, axis: Axis, *, n_components: int = 10) -> PersonaSpace:
    """PCA of ``rv``'s role vectors at each extracted layer (float64 SVD of the
    role vectors centred on their mean), compared with ``axis``."""
    n = len(rv.names)
    if n < 2:
        raise ValueError(f"persona space needs at least 2 role vectors (have {n})")
    k = max(1, min(as_positive_int(n_components, "n_components"), n - 1, rv.hidden_size))
    ratios, comps, loads, dloads, coss, projs, dprojs = [], [], [], [], [], [], []
    for j, layer in enumerate(rv.layers):
        x = rv.vectors[:, j, :].double()
        mu = x.mean(0)
        xc = x - mu
        _, s, vt = torch.linalg.svd(xc, full_matrices=False)
        var = s**2
        ratio = var / var.sum() if float(var.sum()) > 0 else torch.zeros_like(var)
        vt = vt[:k].clone()
        a = axis.vectors[layer].double()
        an = float(a.norm())
        ahat = a / an if an > 0 else a
        cos = float(vt[0] @ ahat)
        if cos < 0:
            vt[0] = -vt[0]
            cos = -cos
        ratios.append(ratio[:k])
        comps.append(vt)
        loads.append(xc @ vt.T)
        dloads.append((rv.default[j].double() - mu) @ vt.T)
        coss.append(cos)
        projs.append(x @ ahat)
        dprojs.append(float(rv.default[j].double() @ ahat))
    f = torch.float32
    return PersonaSpace(
        list(rv.names),
        list(rv.layers),
        torch.stack(ratios).to(f),
        torch.stack(comps).to(f),
        torch.stack(loads).to(f),
        torch.stack(dloads).to(f),
        torch.tensor(coss, dtype=f),
        torch.stack(projs).to(f),
        torch.tensor(dprojs, dtype=f),
    )


def plot_persona_space(
    space: PersonaSpace, folder: str | Path, *, layer: int | None = None, annotate: int = 40
) -> list[Path]:
    """Writes ``variance_explained.png`` (variance per component at ``layer``,
    and PC1's share and cosine with the axis across layers) and
    ``pc1_pc2_layer{L}.png`` (roles on PC1/PC2 coloured by their projection on
    the axis, the default vector as a star). ``layer`` defaults to the middle
    extracted layer. Returns the paths."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone
    from matplotlib.ticker import MaxNLocator

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layer = space.layers[len(space.layers) // 2] if layer is None else int(layer)
    if layer not in space.layers:
        raise ValueError(f"layer {layer} was not analysed (layers: {space.layers})")
    j = space.layers.index(layer)
    paths = []

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    r = space.variance_ratio[j].numpy()
    xs = range(1, len(r) + 1)
    ax1.bar(xs, r, color="#4c72b0", label="per component")
    ax1.plot(xs, r.cumsum(), "o-", color="#dd8452", label="cumulative")
    ax1.set_xlabel("principal component")
    ax1.set_ylabel("fraction of variance")
    ax1.set_title(f"role vectors, layer {layer}")
    ax1.set_ylim(0, 1.02)
    ax1.legend(frameon=False)
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.plot(space.layers, space.variance_ratio[:, 0].numpy(), "o-", label="PC1 variance share")
    ax2.plot(space.layers, space.cos_pc1_axis.numpy(), "s-", label="cos(PC1, axis)")
    ax2.set_xlabel("layer")
    ax2.set_ylim(0, 1.02)
    ax2.set_title("across layers")
    ax2.legend(frameon=False)
    fig.tight_layout()
    p = folder / "variance_explained.png"
    fig.savefig(p, dpi=120)
    paths.append(p)

    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    load = space.loadings[j].numpy()
    y = load[:, 1] if load.shape[1] > 1 else load[:, 0] * 0
    proj = space.axis_projection[j].numpy()
    sc = ax.scatter(load[:, 0], y, c=proj, cmap="coolwarm", s=28, edgecolors="k", linewidths=0.3)
    dl = space.default_loading[j].numpy()
    ax.scatter(
        [dl[0]],
        [dl[1] if len(dl) > 1 else 0],
        marker="*",
        s=260,
        c="gold",
        edgecolors="k",
        label="default (Assistant)",
        zorder=3,
    )
    order = proj.argsort()
    show = (
        set(order[: annotate // 2]) | set(order[-(annotate - annotate // 2) :])
        if len(proj) > annotate
        else set(range(len(proj)))
    )
    for i in sorted(show):
        ax.annotate(
            space.names[i],
            (load[i, 0], y[i]),
            fontsize=7,
            xytext=(3, 2),
            textcoords="offset points",
        )
    ax.set_xlabel(
        f"PC1 ({space.variance_ratio[j, 0]:.0%}, cos with axis {space.cos_pc1_axis[j]:.2f})"
    )
    ax.set_ylabel(f"PC2 ({space.variance_ratio[j, 1]:.0%})" if load.shape[1] > 1 else "PC2")
    ax.set_title(f"persona space, layer {layer}")
    fig.colorbar(sc, ax=ax, label="projection on the unit axis")
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.ticklabel_format(style="sci", scilimits=(-3, 4))
    ax.legend(frameon=False, loc="best")
    fig.tight_layout()
    p = folder / f"pc1_pc2_layer{layer}.png"
    fig.savefig(p, dpi=120)
    paths.append(p)
    return paths


@dataclass
class AxisSummary:
    """What :func:`compute_axis` did."""

    out_dir: Path
    axis: Axis
    role_vectors: RoleVectors
    space: PersonaSpace | None
    plots: list[Path]
    seconds: float

    def __str__(self) -> str:
        rv = self.role_vectors
        mid = rv.layers[len(rv.layers) // 2]
        norm = float(self.axis.vectors[mid].norm())
        judge = f"judge >= {rv.metadata['min_score']}" if rv.metadata.get("judged") else "no judge"
        extra = ""
        if self.space is not None:
            j = self.space.layers.index(mid)
            extra = (
                f", PC1 {float(self.space.variance_ratio[j, 0]):.0%} of variance, "
                f"cos(PC1, axis) {float(self.space.cos_pc1_axis[j]):.2f}"
            )
        skipped = len(rv.metadata.get("skipped", {}))
        return (
            f"axis: {len(rv.names)} roles{f' ({skipped} skipped)' if skipped else ''} + default "
            f"({rv.default_count} responses), {judge}, {len(rv.layers)} layers; layer {mid}: "
            f"|axis| {norm:.3g}{extra} -> {RunFolder(self.out_dir).axis}"
        )


def compute_axis(
    out_dir: str | Path,
    *,
    judge: bool | None = None,
    min_score: int = 3,
    min_count: int = 50,
    roles: Iterable[str] | None = None,
    n_components: int = 10,
    plots: bool = True,
    plot_layer: int | None = None,
    reference_vectors: bool = False,
    progress: bool = True,
) -> AxisSummary:
    """Role vectors, the axis and persona space of a run (see the module docs);
    writes them to ``out_dir``. Arguments as in :func:`compute_role_vectors`;
    ``n_components`` principal components are kept per layer, ``plots`` writes
    the figures (``plot_layer`` defaults to the middle extracted layer),
    ``reference_vectors`` also writes ``vectors/{role}.pt``.

    Only rank 0 writes when run under torchrun (the step is cheap)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    rv = compute_role_vectors(
        out_dir, judge=judge, min_score=min_score, min_count=min_count, roles=roles
    )
    axis = axis_from_vectors(rv)
    space = persona_space(rv, axis, n_components=n_components) if len(rv.names) >= 2 else None
    rank, _ = _dist.world()
    paths: list[Path] = []
    if rank == 0:
        run = RunFolder(out_dir)
        axis.save(run.axis)
        torch.save({"axis": axis.vectors.clone(), "metadata": _plain(axis.metadata)}, run.axis_pt)
        rv.save(run.role_vectors)
        if reference_vectors:
            rv.save_reference(run.reference_vectors)
        if space is not None:
            space.save(run.persona_space, {"model": rv.metadata.get("model", "")})
            if plots:
                paths = plot_persona_space(space, run.plots, layer=plot_layer)
    _dist.barrier()
    summary = AxisSummary(out_dir, axis, rv, space, paths, time.perf_counter() - t0)
    if progress and rank == 0:
        print(summary)
    return summary


def _plain(obj: Any) -> Any:
    """Metadata as plain containers (loadable with ``torch.load(weights_only=True)``)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
