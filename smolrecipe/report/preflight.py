"""The preflight report: what a recipe will cost and whether it fits, printed before any job starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rich.console import Console
from rich.table import Table

from smolrecipe.recipe.estimates import GB, count_params, estimate_memory, fits
from smolrecipe.recipe.plan import RunPlan
from smolrecipe.recipe.schema import DOMAINS

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)


def human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def model_table(plan: RunPlan) -> Table:
    r = plan.recipe
    p = count_params(r)
    m = r.model
    t = Table(title=f"{r.name}: model", title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("parameters, total", f"{p.total:,} ({human(p.total)})")
    t.add_row("  embedding" + (" (tied with lm_head)" if m.tie_word_embeddings else ""), f"{p.embedding:,}")
    t.add_row("  non-embedding", f"{p.non_embedding:,}")
    t.add_row("shape", f"{m.num_layers} layers x {m.hidden_size}, {m.num_attention_heads}/{m.num_key_value_heads} "
                       f"heads (q/kv), SwiGLU {m.intermediate_size}, vocab {m.vocab_size:,}")
    first = plan.stages[0]
    t.add_row("tokens per step", f"{first.global_batch} seq x {r.training.sequence_length} = {first.tokens_per_step:,}"
                                 f"  (micro {first.micro_batch_size} x accum {first.grad_accumulation}"
                                 f" x dp {r.parallelism.dp})")
    return t


def stages_table(plan: RunPlan) -> Table:
    t = Table(title="stages (steps and decay are computed from the token budgets)", title_justify="left")
    for col in ("stage", "steps", "tokens", *DOMAINS, "LR peak/min", "warmup", "decay steps", "starts from"):
        t.add_column(col, justify="left" if col in ("stage", "starts from") else "right")
    for s in plan.stages:
        by_domain = s.tokens_by("domain")
        shares = [
            f"{human(by_domain[d])} ({by_domain[d] / s.tokens:.0%})" if d in by_domain else "-" for d in DOMAINS
        ] if s.reads_sources else [f"({s.kind} data)", "", ""]
        start = "scratch (resumes itself)" if s.init_from is None else (
            f"{s.init_from} final, " + ("with" if s.load_optimizer else "fresh") + " optimizer"
        )
        t.add_row(s.name, f"{s.train_steps:,}", human(s.tokens), *shares, f"{s.lr.peak:g}/{s.lr.min:g}",
                  str(s.lr.warmup_steps), f"{s.lr_decay_steps:,} {s.lr.decay}", start)
    return t


def sources_table(plan: RunPlan) -> Table:
    stages = [s for s in plan.stages if s.reads_sources]
    t = Table(title="dataset weights per folder (domain share x source share, plus replay)", title_justify="left")
    t.add_column("source")
    t.add_column("domain")
    for s in stages:
        t.add_column(s.name, justify="right")
    for name, src in plan.recipe.sources.items():
        cells = []
        for s in stages:
            w = next((fw.weight for fw in s.weights if fw.source == name), None)
            cells.append("-" if w is None else f"{w:.4f} = {human(w * s.tokens)}")
        t.add_row(name, src.domain, *cells)
    return t


def memory_table(plan: RunPlan) -> Table:
    r = plan.recipe
    budget = r.cluster.gpu_memory_gb
    mine = estimate_memory(r)
    t = Table(title=f"memory per {r.cluster.gpu_name} rank vs budget {budget:g} GB "
                    f"(recipe: micro-batch {mine.micro_batch_size}, recompute {'on' if mine.recompute else 'off'})",
              title_justify="left")
    t.add_column("micro-batch", justify="right")
    t.add_column("weights+grads+AdamW", justify="right")
    for label in ("with layer recompute", "without recompute"):
        t.add_column(f"activations+logits {label}", justify="right")
        t.add_column("verdict")
    for mbs in sorted(set(MICRO_BATCHES) | {mine.micro_batch_size}):
        row = []
        for recompute in (True, False):
            e = estimate_memory(r, mbs, recompute)
            row += [f"{(e.activations + e.logits) / GB:.1f} -> {e.total / GB:.1f} GB",
                    "fits" if fits(r, e) else "DOES NOT FIT"]
        static = estimate_memory(r, mbs)
        marker = " *" if mbs == mine.micro_batch_size else ""
        t.add_row(f"{mbs}{marker}", f"{(static.weights + static.grads + static.optimizer) / GB:.1f} GB", *row)
    t.caption = (f"* the recipe's micro-batch. Static part: weights {mine.weights / GB:.1f} + fp32 grads "
                 f"{mine.grads / GB:.1f} + AdamW {mine.optimizer / GB:.1f} GB; +{mine.overhead / GB:.1f} GB "
                 f"{'CUDA/NCCL' if r.cluster.gpus_per_node else 'runtime'} allowance; logits at 10 B per token per vocabulary entry.")
    return t


def memory_verdict(plan: RunPlan) -> str:
    r = plan.recipe
    e = estimate_memory(r)
    verdict = "fits" if fits(r, e) else "DOES NOT FIT"
    return (f"micro-batch {e.micro_batch_size}, recompute {'on' if e.recompute else 'off'}: "
            f"{e.total / GB:.1f} of {r.cluster.gpu_memory_gb:g} GB, {verdict}")


def print_preflight(plan: RunPlan, console: Console | None = None) -> None:
    console = console or Console(width=160)
    for table in (model_table(plan), stages_table(plan), sources_table(plan), memory_table(plan)):
        console.print(table)


# ---------------------------------------------------------------------------------------------
# Data availability: the manifests tools/prepare_data.py wrote, against what each stage reads.

@dataclass(frozen=True)
class SourceUse:
    stage: str
    source: str
    needed: int  # tokens this stage draws from the source
    available: Optional[int]  # tokens in its nanoset folder; None when not prepared
    cumulative: int  # tokens drawn from the source by this stage and every earlier one

    @property
    def epochs(self) -> Optional[float]:
        return self.needed / self.available if self.available else None

    @property
    def cumulative_epochs(self) -> Optional[float]:
        return self.cumulative / self.available if self.available else None


def data_usage(plan: RunPlan) -> list[SourceUse]:
    """Per pretraining stage and source, tokens needed vs available (plan with resolved paths)."""
    from smolrecipe.data.pipeline import read_manifest

    uses, drawn = [], {}
    for stage in (s for s in plan.stages if s.reads_sources):
        needed = stage.tokens_by("source")
        for fw in stage.weights:
            manifest = read_manifest(fw.folder)
            drawn[fw.source] = drawn.get(fw.source, 0) + needed[fw.source]
            uses.append(SourceUse(stage.name, fw.source, needed[fw.source], manifest["tokens"] if manifest else None,
                                  drawn[fw.source]))
    return uses


def data_table(uses: list[SourceUse], max_epochs: float) -> Table:
    t = Table(title=f"data: tokens needed vs prepared (epochs; warning above max_epochs {max_epochs:g})", title_justify="left")
    for col in ("stage", "source", "needed", "prepared", "epochs", "epochs so far"):
        t.add_column(col, justify="left" if col in ("stage", "source") else "right")
    for u in uses:
        if u.available is None:
            t.add_row(u.stage, u.source, human(u.needed), "not prepared", "-", "-")
            continue
        flag = " !" if u.cumulative_epochs > max_epochs else ""
        t.add_row(u.stage, u.source, human(u.needed), human(u.available), f"{u.epochs:.2f}", f"{u.cumulative_epochs:.2f}{flag}")
    return t


def data_warnings(uses: list[SourceUse], max_epochs: float) -> list[str]:
    """One line per source that is missing or read more than max_epochs times (first stage that crosses it)."""
    out, seen = [], set()
    for u in uses:
        if u.source in seen:
            continue
        if u.available is None:
            out.append(f"{u.source}: not prepared yet (run tools/prepare_data.py); {u.stage} needs {human(u.needed)} tokens")
            seen.add(u.source)
        elif u.cumulative_epochs > max_epochs:
            out.append(f"{u.source}: read {u.cumulative_epochs:.1f} times by the end of {u.stage} "
                       f"({human(u.cumulative)} tokens drawn from {human(u.available)} prepared), above max_epochs {max_epochs:g}; "
                       "prepare more of it, lower its share, or raise max_epochs")
            seen.add(u.source)
    return out
