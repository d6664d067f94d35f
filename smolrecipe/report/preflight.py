"""The preflight report: what a recipe will cost and whether it fits, printed before any job starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rich.console import Console
from rich.table import Table

from smolrecipe.kinds import kind_of
from smolrecipe.recipe.budgets import SourceBudget, source_budgets
from smolrecipe.recipe.estimates import (
    GB,
    GPU_PEAK_BF16_TFLOPS,
    INDEX_BYTES_PER_DOCUMENT,
    RunCost,
    count_params,
    estimate_memory,
    fits,
    gpu_key,
    run_cost,
    token_bytes,
)
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
    for col in ("stage", "steps", "tokens", "window", *DOMAINS, "LR peak/min", "warmup", "decay steps", "starts from"):
        t.add_column(col, justify="left" if col in ("stage", "starts from") else "right")
    for s in plan.stages:
        by_domain = s.tokens_by("domain")
        shares = [
            f"{human(by_domain[d])} ({by_domain[d] / s.tokens:.0%})" if d in by_domain else "-" for d in DOMAINS
        ] if s.reads_sources else [f"({s.kind} data)", "", ""]
        start = "scratch (resumes itself)" if s.init_from is None else (
            f"{s.init_from} final, " + ("with" if s.load_optimizer else "fresh") + " optimizer"
        )
        window = f"{s.sequence_length:,}" + (f", RoPE {s.rope_theta:g}" if s.rope_theta != plan.recipe.model.rope_theta else "")
        decay = "stable (min = peak)" if s.lr.min == s.lr.peak else f"{s.lr_decay_steps:,} {s.lr.decay}"
        t.add_row(s.name, f"{s.train_steps:,}", human(s.tokens), window, *shares, f"{s.lr.peak:g}/{s.lr.min:g}",
                  str(s.lr.warmup_steps), decay, start)
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


def longer_context_stages(plan: RunPlan) -> list:
    """The stages that train at windows other than training.sequence_length (context extensions)."""
    return [s for s in plan.stages if s.sequence_length != plan.recipe.training.sequence_length]


def largest_fitting(r, sequence_length: int, recompute: bool) -> int | None:
    fitting = [mbs for mbs in MICRO_BATCHES if fits(r, estimate_memory(r, mbs, recompute, sequence_length))]
    return max(fitting) if fitting else None


def context_memory_table(plan: RunPlan) -> Table | None:
    """Memory of the stages at another window length: their own micro-batch, and the largest that fits."""
    r, stages = plan.recipe, longer_context_stages(plan)
    if not stages:
        return None
    recompute = r.training.recompute_layer
    t = Table(title=f"memory per {r.cluster.gpu_name} rank at each context extension's windows "
                    f"(recompute {'on' if recompute else 'off'}, as training.recompute_layer)", title_justify="left")
    for col in ("stage", "window", "micro-batch", "tokens per micro-batch", "activations+logits", "total", "verdict",
                "largest micro-batch that fits (recompute on / off)"):
        t.add_column(col, justify="left" if col in ("stage", "verdict") else "right")
    for s in stages:
        e = estimate_memory(r, s.micro_batch_size, recompute, s.sequence_length)
        on, off = (largest_fitting(r, s.sequence_length, flag) for flag in (True, False))
        t.add_row(s.name, f"{s.sequence_length:,}", str(s.micro_batch_size), f"{s.micro_batch_size * s.sequence_length:,}",
                  f"{(e.activations + e.logits) / GB:.1f} GB", f"{e.total / GB:.1f} GB", "fits" if fits(r, e) else "DOES NOT FIT",
                  f"{on or 'none'} / {off or 'none'}")
    return t


def memory_verdict(plan: RunPlan) -> str:
    r = plan.recipe
    e = estimate_memory(r)
    verdict = "fits" if fits(r, e) else "DOES NOT FIT"
    line = (f"micro-batch {e.micro_batch_size}, recompute {'on' if e.recompute else 'off'}: "
            f"{e.total / GB:.1f} of {r.cluster.gpu_memory_gb:g} GB, {verdict}")
    for s in longer_context_stages(plan):
        e = estimate_memory(r, s.micro_batch_size, None, s.sequence_length)
        line += (f"; {s.name} at {s.sequence_length:,}: micro-batch {s.micro_batch_size}, {e.total / GB:.1f} GB, "
                 f"{'fits' if fits(r, e) else 'DOES NOT FIT'}")
    return line


def size(n: float) -> str:
    """Bytes to three significant figures: 6.89 GB, 675 GB, 984 MB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}" if n < 100 * scale else f"{n / scale:,.0f} {unit}"
    return f"{n:g} B"


def hours(h: float) -> str:
    return f"{h:,.1f} h" + (f" ({h / 24:.1f} d)" if h >= 48 else "")


def cost_table(plan: RunPlan, cost: RunCost) -> Table:
    r = plan.recipe
    per_token = cost.per_token
    basis = (f"{r.cluster.gpu_name} at {cost.peak_tflops:g} TFLOP/s dense bf16 x assumed MFU {cost.mfu:.0%}"
             if cost.peak_tflops else "no GPU peak known: FLOPs only")
    t = Table(title=f"cost: {per_token.total / 1e9:.3f} GFLOPs per token (6N {per_token.dense / 1e9:.3f} + attention "
                    f"{per_token.attention / 1e9:.3f}); {basis}", title_justify="left")
    wall_column = f"wall-clock on {cost.gpus} GPUs" if cost.gpus else "wall-clock"
    for col in ("stage", "steps", "tokens", "FLOPs", "GPU-hours", wall_column, "checkpoints"):
        t.add_column(col, justify="left" if col == "stage" else "right")

    def row(name, steps, tokens, flops, gpu_hours, wall, checkpoints):
        t.add_row(name, steps, human(tokens), f"{flops:.2e}", "-" if gpu_hours is None else f"{gpu_hours:,.1f}",
                  "-" if wall is None else hours(wall), f"{checkpoints:,}")

    for stage, c in zip(plan.stages, cost.stages, strict=True):
        row(c.name, f"{stage.train_steps:,}", c.tokens, c.flops, c.gpu_hours, c.wall_hours, c.checkpoints)
    row("total", f"{sum(s.train_steps for s in plan.stages):,}", sum(c.tokens for c in cost.stages), cost.flops,
        cost.gpu_hours, cost.wall_hours, cost.checkpoints)
    t.caption = ("N: the weights multiplied per token (projections + lm_head; not the embedding lookup); attention "
                 "12 x layers x seq x hidden (QK^T and AV, forward + backward, no causal halving); layer recompute not "
                 "counted. Wall-clock: GPU-hours / GPUs, no evaluation, checkpoint writes or queueing.")
    return t


def budgets_table(plan: RunPlan, budgets: dict[str, SourceBudget]) -> Table:
    stages = [s.name for s in plan.stages if s.reads_sources]
    per_token = token_bytes(plan.recipe)
    t = Table(title=f"data budgets: tokens to prepare per source (the stages' draw + margin; {per_token} B per token "
                    "in the .ds files)", title_justify="left")
    for col in ("source", *(f"{name} draws" for name in stages), "drawn", "budget", "basis", "epochs", "disk"):
        t.add_column(col, justify="left" if col in ("source", "basis") else "right")
    for b in budgets.values():
        drawn = [human(b.drawn_by_stage[name]) if name in b.drawn_by_stage else "-" for name in stages]
        t.add_row(b.source, *drawn, human(b.drawn), human(b.budget), b.basis, f"{b.epochs:.2f}",
                  size(b.budget * per_token))
    total = sum(b.budget for b in budgets.values())
    t.add_row("total", *[human(sum(b.drawn_by_stage.get(name, 0) for b in budgets.values())) for name in stages],
              human(sum(b.drawn for b in budgets.values())), human(total), "", "", size(total * per_token))
    return t


def cost_lines(plan: RunPlan, cost: RunCost, budgets: dict[str, SourceBudget]) -> list[str]:
    """The disk lines (prepared data, checkpoints) and, when GPU-hours cannot be given, why."""
    r = plan.recipe
    tokens = sum(b.budget for b in budgets.values())
    own = [s.name for s in plan.stages if s.dataset]
    lines = [f"disk, prepared data: {human(tokens)} tokens x {token_bytes(r)} B = {size(tokens * token_bytes(r))}, plus "
             f"{INDEX_BYTES_PER_DOCUMENT} B per document in the .index files"
             + (f"; not counted: the own dataset of {', '.join(own)} (its size is the dataset's, not the plan's)" if own else "")]
    per_stage = ", ".join(f"{c.name} {c.checkpoints}" for c in cost.stages)
    optimizer = ("AdamW exp_avg + exp_avg_sq + fp32 master weights" if r.training.optimizer.accumulate_grad_in_fp32
                 else "AdamW exp_avg + exp_avg_sq")
    trl = [s.name for s in plan.stages if kind_of(s.kind).engine == "trl"]
    # A TRL stage's checkpoints are transformers folders: fp32 weights + AdamW's two fp32 states, 12 B
    # per parameter against nanotron's 14, counted alike here.
    folders = "checkpoint folders" + (f", {', '.join(trl)}'s transformers ones" if trl else "")
    lines.append(f"disk, checkpoints: {cost.checkpoints} {folders} ({per_stage}: every "
                 f"{r.training.checkpoint_interval:,} steps and the last; none deleted) x {size(cost.checkpoint_size)} "
                 f"(weights {r.model.dtype} {size(cost.checkpoint_weights)} + optimizer {size(cost.checkpoint_optimizer)}: "
                 f"{optimizer}) = {size(cost.checkpoints * cost.checkpoint_size)}; keep only the final one of each "
                 f"stage: {size(len(cost.stages) * cost.checkpoint_size)}")
    if cost.peak_tflops is None and r.cluster.gpus_per_node:
        lines.append(f"note: no GPU-hours: cluster.gpu_name {r.cluster.gpu_name!r} ({gpu_key(r.cluster.gpu_name)!r}) is "
                     f"not in the table of dense bf16 peaks: name one of {sorted(set(GPU_PEAK_BF16_TFLOPS))}")
    elif cost.peak_tflops is None:
        lines.append("note: no GPU-hours: the recipe runs on CPU (cluster.gpus_per_node: 0)")
    return lines


def print_preflight(plan: RunPlan, console: Console | None = None) -> None:
    console = console or Console(width=160)
    for table in (model_table(plan), stages_table(plan), sources_table(plan), memory_table(plan), context_memory_table(plan)):
        if table is None:
            continue
        console.print(table)
    budgets, cost = source_budgets(plan), run_cost(plan)
    console.print(budgets_table(plan, budgets))
    console.print(cost_table(plan, cost))
    for line in cost_lines(plan, cost, budgets):
        console.print(line, highlight=False)


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
    from smolrecipe.data.verify import read_manifest

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
