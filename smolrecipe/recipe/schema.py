"""The recipe: one YAML file that every config, script and job of a run is generated from.

The schema is strict (unknown keys are errors) and every cross-field rule is checked at load
time, so a wrong setting is caught on a laptop, not two days into a SLURM queue.
Numbers that follow from others (steps, weights, decay lengths, resume paths) are not fields
here: `smolrecipe.recipe.plan` computes them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import string
import typing
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from smolrecipe.errors import UserError
from smolrecipe.recipe.filters import FILTER_NAMES

DOMAINS = ("web", "math", "code")
SHARE_TOLERANCE = 1e-6

_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_count(value: object) -> object:
    """Accept 14_024_704_000, 14024704000 or a human string such as "14.0B" / "512k"."""
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMbBtT]?)", text)
        if not match:
            return value  # let pydantic report it as not an integer
        number, suffix = match.groups()
        scaled = float(number) * _SUFFIXES.get(suffix.lower(), 1)
        return int(round(scaled))
    return value


Count = Annotated[int, BeforeValidator(parse_count)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelSpec(_Strict):
    """LLaMA-style decoder; the knobs nanotron's LlamaConfig and transformers' LlamaConfig share."""

    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    rms_norm_eps: float = Field(gt=0)
    rope_theta: float = Field(gt=0)
    rope_interleaved: bool = False
    tie_word_embeddings: bool = True
    init_std: float = Field(default=0.02, gt=0)
    hidden_act: Literal["silu"] = "silu"
    attn_implementation: Literal["flash_attention_2", "sdpa"] = "flash_attention_2"
    dtype: Literal["bfloat16", "float32"] = "bfloat16"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_size(self) -> int:
        return self.head_dim * self.num_key_value_heads


BYTE_ALPHABET = 256  # a byte-level BPE vocabulary starts with one entry per byte value


class TokenizerTraining(_Strict):
    """A byte-level BPE tokenizer trained on the recipe's own sources (smolrecipe.data.tokenizer_training)
    instead of taking a `base`: digits one per token, as LLaMA-3 and SmolLM split them."""

    vocab_size: int = Field(gt=0)  # entries, the byte alphabet and the special tokens included
    sources: Optional[list[str]] = Field(default=None, min_length=1)  # recipe source names; default: every source
    max_characters: Count = Field(default=20_000_000, gt=0)  # per source: read at most this much text
    min_frequency: int = Field(default=2, gt=0)  # a pair seen fewer times is never merged
    special_tokens: list[str] = Field(default=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], min_length=1)  # ids 0, 1, ...


class TokenizerSpec(_Strict):
    """Where the tokenizer comes from: `base` (a hub id, local folder or .gguf) or `train` (a BPE
    trained on the recipe's sources), exactly one; `path` is the folder built from it (+ the chat
    template) that datatrove records and nanotron loads offline."""

    base: Optional[str] = None
    train: Optional[TokenizerTraining] = None
    revision: Optional[str] = None  # the hub commit of `base` to pin
    gated: bool = False  # `base` needs a hub login (LLaMA-3's license): checked before it is fetched
    path: str
    chat_template: str
    bos_token_id: int = Field(ge=0)
    eos_token_id: int = Field(ge=0)
    # The token datatrove appends after every pretraining document (default: the eos token).
    # Chat tokenizers whose eos is an end-of-turn token (SmolLM2-Instruct's <|im_end|>) should
    # separate documents with their end-of-text token instead.
    document_end: Optional[str] = None

    @model_validator(mode="after")
    def _one_origin(self) -> "TokenizerSpec":
        if (self.base is None) == (self.train is None):
            raise UserError("tokenizer.train" if self.base else "tokenizer.base",
                            "give exactly one of `base` (a tokenizer to reuse) or `train` (one trained on the sources)",
                            "keep one of the two" if self.base else "add `base: HuggingFaceTB/SmolLM2-135M-Instruct` or a `train:` block")
        if self.train is not None:
            _check_training(self, self.train)
        return self


def _check_training(spec: TokenizerSpec, train: TokenizerTraining) -> None:
    """What a trained tokenizer's settings must agree on, before any text is read."""
    for field in ("revision", "gated"):
        if getattr(spec, field):
            raise UserError(f"tokenizer.{field}", "applies to a `base` tokenizer from the hub; a trained one has none", "remove it")
    special = train.special_tokens
    repeated = sorted({t for t in special if special.count(t) > 1})
    if repeated or "" in special:
        raise UserError("tokenizer.train.special_tokens", f"{repeated[0]!r} is listed twice" if repeated else "has an empty token",
                        "list each special token once, e.g. [\"<|endoftext|>\", \"<|im_start|>\", \"<|im_end|>\"]")
    floor = BYTE_ALPHABET + len(special)
    if train.vocab_size <= floor:
        raise UserError("tokenizer.train.vocab_size", f"{train.vocab_size:,} leaves no room for merges: "
                        f"the byte alphabet and {len(special)} special token(s) take {floor}",
                        f"use more than {floor} (e.g. 4096), and the same model.vocab_size")
    ids = ", ".join(f"{i} = {t}" for i, t in enumerate(special))
    for field in ("bos_token_id", "eos_token_id"):
        value = getattr(spec, field)
        if value >= len(special):
            raise UserError(f"tokenizer.{field}", f"{value} is not the id of a special token (a trained tokenizer has {ids})",
                            "use one of those ids, or add the token to tokenizer.train.special_tokens")
    if spec.document_end is not None and spec.document_end not in special:
        raise UserError("tokenizer.document_end", f"{spec.document_end!r} is not one of tokenizer.train.special_tokens {special}",
                        "use one of them, or add it to the list")


class Paths(_Strict):
    """Where data and runs live. `${VAR}` and `${VAR:-default}` are expanded when a config is
    resolved for a job, never when the committed configs are rendered."""

    data: str
    runs: str
    # The folder under `data` that holds this recipe's prepared data (<data>/<dataset>/<source>/);
    # default: the recipe's name. A sweep's variants share their sweep's (smolrecipe.sweeps).
    dataset: Optional[str] = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$")


class OptimizerSpec(_Strict):
    name: Literal["adamw"] = "adamw"
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    clip_grad: Optional[float] = Field(default=1.0, gt=0)
    accumulate_grad_in_fp32: bool = True
    fused: bool = True
    zero_stage: Literal[0, 1] = 0


class Parallelism(_Strict):
    dp: int = Field(gt=0)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)

    @property
    def world(self) -> int:
        """Processes (one per GPU) the layout needs."""
        return self.dp * self.tp * self.pp


class Training(_Strict):
    """What every stage shares: sequence, batch (a stage may set its own), optimizer, checkpointing."""

    sequence_length: int = Field(gt=0)
    micro_batch_size: int = Field(gt=0)
    grad_accumulation: int = Field(gt=0)
    recompute_layer: bool = False
    optimizer: OptimizerSpec = OptimizerSpec()
    checkpoint_interval: int = Field(gt=0)
    seed: int = 42
    num_loading_workers: int = Field(default=1, ge=0)


class Filter(_Strict):
    """One datatrove filter step. `name` picks the filter (smolrecipe.recipe.filters.FILTER_CLASSES),
    `args` go to its constructor."""

    name: str
    args: dict[str, typing.Any] = {}


class DatasetCard(_Strict):
    """What a hub dataset's card says about the part the recipe reads: the data plan's estimate of
    download size and document count when no sample can be read (offline, before logging in)."""

    documents: Optional[Count] = Field(default=None, gt=0)
    tokens: Optional[Count] = Field(default=None, gt=0)
    bytes: Optional[Count] = Field(default=None, gt=0)  # the files as stored, or the text, as the card gives it
    files: Optional[int] = Field(default=None, gt=0)  # data files of the part read: at most one datatrove task each
    tokenizer: str = "unstated"  # whose tokens the card counts; ours differ by some percent
    where: str = ""  # the card or page the numbers come from


class NeedleSource(_Strict):
    """Needle-in-a-haystack training documents (smolrecipe.data.needles), generated by prepare_data
    into the source's `path` from another source's text: a haystack of that text, a needle fact at a
    random depth, the question about it at the end, and the answer, for a context-extension stage
    to mix in."""

    haystack: str  # the source whose documents fill the haystacks
    lengths: list[int] = Field(min_length=1)  # tokens per document, drawn uniformly from these
    documents: Optional[Count] = Field(default=None, gt=0)  # default: enough for what the stages draw
    seed: int = 0
    digits: int = Field(default=4, ge=2, le=12)  # the needle's value: a number of this many digits


class Source(_Strict):
    """A corpus: a hub dataset id (with subset/split), a local JSONL/Parquet path, or needle
    documents generated into `path` (`needles:`)."""

    domain: Literal["web", "math", "code"]
    hf: Optional[str] = None
    path: Optional[str] = None
    subset: Optional[str] = None  # the hub dataset's config name
    data_dir: Optional[str] = None  # a folder inside the hub dataset (StarCoder: `python`)
    revision: Optional[str] = None  # a hub commit/branch to pin (a script-based set: "refs/convert/parquet")
    split: str = "train"
    text_field: str = "text"
    # Build the text from several fields instead, e.g. "{problem}\n\n{generated_solution}".
    text_template: Optional[str] = None
    # Or chat records (smol-smoltalk's `messages` lists): each conversation is one document, rendered
    # by the recipe's chat template, for instruction data mixed into a late pretraining stage (MiniCPM's
    # decay phase) so that SFT starts from a model that has read the chat format at pretraining scale.
    messages_field: Optional[str] = None
    # Read at most this many documents (split evenly over the datatrove tasks): a sample of a big hub set.
    max_documents: Optional[int] = Field(default=None, gt=0)
    # How many tokens to prepare. By default the plan decides (recipe.budgets: what the stages draw
    # from the source, plus a small margin); these override it: a token count, or a fraction of
    # what the stages draw (0.5 = every prepared token is read twice).
    max_tokens: Optional[Count] = Field(default=None, gt=0)
    budget_fraction: Optional[float] = Field(default=None, gt=0)
    # datatrove tasks, the unit a killed or requeued run resumes from (default: one per 50M tokens
    # of the budget, at most one per file; see smolrecipe.data.data_plan).
    tasks: Optional[int] = Field(default=None, gt=0)
    # Records that cannot be decoded or parsed are counted in the manifest; above this share of
    # the records read, preparing the source fails and names the first bad file and line.
    max_lost_fraction: float = Field(default=0.001, ge=0, le=1)
    card: Optional[DatasetCard] = None
    # A hub set that needs `huggingface-cli login` (and accepted terms): checked before any work.
    gated: bool = False
    filters: list[Filter] = []
    dedup: bool = False
    license: Optional[str] = None
    needles: Optional[NeedleSource] = None

    @model_validator(mode="after")
    def _one_origin(self) -> "Source":
        if (self.hf is None) == (self.path is None):
            raise ValueError("give exactly one of `hf` (hub dataset id) or `path` (local JSONL/Parquet)")
        if self.needles is not None and self.path is None:
            raise ValueError("a `needles:` source is generated into `path` (a folder); give `path` instead of `hf`")
        if self.path is not None and (self.subset or self.data_dir or self.revision):
            raise ValueError("`subset`, `data_dir` and `revision` select part of a hub dataset; a local `path` has none")
        if self.max_tokens is not None and self.budget_fraction is not None:
            raise ValueError("give at most one of `max_tokens` (a token count) or `budget_fraction` (of what the stages draw)")
        if self.messages_field is not None and (self.text_template is not None or self.needles is not None):
            raise ValueError("`messages_field` renders chats as the text; give it without `text_template` or `needles:`")
        return self


class DomainMix(_Strict):
    share: float = Field(gt=0, le=1)
    sources: dict[str, float]


class Replay(_Strict):
    """Re-show an earlier stage's mixture: `fraction` of this stage's tokens follow the weights
    of stage `from`; the domain shares apply to the remaining 1 - fraction."""

    from_: str = Field(alias="from")
    fraction: float = Field(ge=0, lt=1)


class LRSchedule(_Strict):
    peak: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    warmup_style: Literal["linear", "constant"] = "linear"
    min: float = Field(ge=0)
    decay: Literal["cosine", "linear", "1-sqrt"] = "cosine"
    # Warmup-stable-decay: start decaying this many steps after step 0 (default: right after warmup).
    decay_starting_step: Optional[int] = Field(default=None, ge=0)

    @property
    def decay_start(self) -> int:
        return self.decay_starting_step if self.decay_starting_step is not None else self.warmup_steps


class StageSpec(_Strict):
    """What every kind of stage has: a name, a budget, an LR schedule, where it starts from.

    A kind is a subclass with `kind: Literal["<name>"]` and its own fields, listed in STAGE_KINDS;
    its behaviour (configs, data, training on each backend, evals) lives in smolrecipe.kinds.<name>.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: str
    tokens: Optional[Count] = None
    steps: Optional[int] = None
    lr: LRSchedule
    init_from: Optional[str] = None
    load_optimizer: bool = False
    # Sequences per micro-batch and micro-batches per step; default: the `training:` section's.
    micro_batch_size: Optional[int] = Field(default=None, gt=0)
    grad_accumulation: Optional[int] = Field(default=None, gt=0)
    eval_suites: list[str] = []

    def data_folder(self, recipe: "Recipe") -> Optional[str]:
        """The folder of this stage's own prepared dataset (None: it reads the recipe's sources)."""
        return None

    def mixture_weights(self, recipe: "Recipe") -> dict[str, Decimal]:
        """Exact per-source weights of the stage's token mixture (empty: it does not read the sources)."""
        return {}

    def check(self, recipe: "Recipe", where: str, earlier: list["StageSpec"]) -> None:
        """The kind's own cross-field rules (the shared ones are in Recipe._check_stages)."""

    def compute_per_token(self) -> float:
        """The FLOPs of a step relative to a forward and backward pass over its tokens once (the cost table)."""
        return 1.0


class PretrainStage(StageSpec):
    """Next-token prediction on a blend of the recipe's sources (nanoset folders)."""

    kind: Literal["pretrain"]
    mixture: dict[str, DomainMix]
    replay: Optional[Replay] = None

    def mixture_weights(self, recipe: "Recipe") -> dict[str, Decimal]:
        """(1 - replay) x domain share x source share + replay x the earlier stage's weights."""
        replay = Decimal(str(self.replay.fraction)) if self.replay else Decimal(0)
        weights: dict[str, Decimal] = {}
        for mix in self.mixture.values():
            for source, share in mix.sources.items():
                w = (1 - replay) * Decimal(str(mix.share)) * Decimal(str(share))
                weights[source] = weights.get(source, Decimal(0)) + w
        if self.replay:
            for source, w in recipe.stage(self.replay.from_).mixture_weights(recipe).items():
                weights[source] = weights.get(source, Decimal(0)) + replay * w
        return weights

    def check(self, recipe: "Recipe", where: str, earlier: list[StageSpec]) -> None:
        _check_mixture(recipe, self, where)
        if self.replay is not None:
            _check_earlier(recipe, self.replay.from_, f"{where}.replay.from", [s.name for s in earlier])
            replayable = [s.name for s in earlier if s.mixture_weights(recipe)]
            if self.replay.from_ not in replayable:
                raise UserError(f"{where}.replay.from", f"'{self.replay.from_}' has no token mixture to replay",
                                f"replay one of the earlier pretraining stages: {replayable}")


class LongContextStage(PretrainStage):
    """Context extension (smolrecipe.kinds.long_context): pretraining continued from an earlier stage
    at a longer sequence length with a larger RoPE base, on a mixture that should hold long documents
    (a `min_tokens` filter on a source) and may mix in needle-in-a-haystack documents (a `needles:`
    source). The stages after it inherit its RoPE base; their windows stay training.sequence_length."""

    kind: Literal["long_context"]
    sequence_length: int = Field(gt=0)
    rope_theta: float = Field(gt=0)

    def check(self, recipe: "Recipe", where: str, earlier: list[StageSpec]) -> None:
        if self.init_from is None:
            raise UserError(f"{where}.init_from", "context extension continues a trained model",
                            "start it from a pretraining stage: init_from: <stage>")
        parent = recipe.context(self.init_from)
        if self.sequence_length <= parent.max_position:
            raise UserError(f"{where}.sequence_length", f"{self.sequence_length:,} tokens is not longer than the "
                            f"{parent.max_position:,} '{self.init_from}' was trained for",
                            f"extend it, e.g. to {4 * parent.max_position:,} (SmolLM2 went 2k -> 8k, Llama 3 8k -> 128k in steps)")
        if self.rope_theta < parent.rope_theta:
            raise UserError(f"{where}.rope_theta", f"{self.rope_theta:g} is below the {parent.rope_theta:g} "
                            f"'{self.init_from}' was trained with; a smaller base makes every rotation faster, "
                            "so the longer positions fall further outside what the model has seen",
                            f"raise it with the length, e.g. {parent.rope_theta * self.sequence_length / parent.max_position:g} "
                            "(x the length ratio) or more (SmolLM2: 10k -> 130k for 2k -> 8k)")
        super().check(recipe, where, earlier)  # the mixture after: its needle lengths are checked against the windows


class AnnealStage(PretrainStage):
    """The decay phase of warmup-stable-decay across stages (smolrecipe.kinds.anneal): continues a
    stable stage (one whose LR ends at its peak: `min` equal to `peak`) with its AdamW moments, from
    that LR without a warmup, and decays to (near) zero on a higher-quality mixture. The LR curve is
    continuous across the boundary; tools/make_config.py plots it."""

    kind: Literal["anneal"]

    def check(self, recipe: "Recipe", where: str, earlier: list[StageSpec]) -> None:
        super().check(recipe, where, earlier)
        if self.init_from is None:
            raise UserError(f"{where}.init_from", "annealing decays a stable stage's LR",
                            "start it from a stable stage: init_from: <stage>")
        parent = recipe.stage(self.init_from)
        if not isinstance(parent, PretrainStage):
            raise UserError(f"{where}.init_from", f"'{parent.name}' is a {parent.kind} stage; annealing continues pretraining",
                            "start it from a pretraining stage with a stable LR")
        if parent.lr.min != parent.lr.peak:
            raise UserError(f"stages[{[s.name for s in recipe.stages].index(parent.name)}].lr.min",
                            f"'{parent.name}' decays its LR to {parent.lr.min:g}; an annealing stage continues a stable one",
                            f"make '{parent.name}' stable (min: {parent.lr.peak:g}, its peak) so that the decay happens here")
        if self.lr.peak != parent.lr.peak:
            raise UserError(f"{where}.lr.peak", f"{self.lr.peak:g}, but '{parent.name}' ends at {parent.lr.peak:g}: the LR would jump "
                            "at the boundary", f"set peak: {parent.lr.peak:g}")
        if self.lr.warmup_steps:
            raise UserError(f"{where}.lr.warmup_steps", f"{self.lr.warmup_steps} warmup steps would drop the LR to 0 at the boundary "
                            "and ramp it up again", "set warmup_steps: 0")
        if self.lr.min >= self.lr.peak:
            raise UserError(f"{where}.lr.min", f"{self.lr.min:g} does not decay from the peak {self.lr.peak:g}",
                            "decay to (near) zero: min: 0 or a few percent of the peak")
        if not self.load_optimizer:
            raise UserError(f"{where}.load_optimizer", f"annealing continues '{parent.name}' with its AdamW moments "
                            "(fresh moments with the stable LR make the first steps jump)", "set load_optimizer: true")


class StageData(_Strict):
    """Where a stage's own dataset comes from: a hub dataset (with subset, revision, split) or local files."""

    hf: Optional[str] = None
    path: Optional[str] = None
    subset: Optional[str] = None
    revision: Optional[str] = None
    split: str = "train"
    _local: typing.ClassVar[str] = "local JSONL/Parquet"  # what `path` holds, for the error

    @model_validator(mode="after")
    def _one_origin(self) -> "StageData":
        if (self.hf is None) == (self.path is None):
            raise ValueError(f"give exactly one of `hf` (hub dataset id) or `path` ({self._local})")
        return self


class OwnDataStage(StageSpec):
    """A stage that trains on a dataset of its own (`data:`), prepared into <paths.data>/<recipe>/<stage>/."""

    data: StageData
    init_from: str

    def data_folder(self, recipe: "Recipe") -> Optional[str]:
        return f"{recipe.paths.data}/{recipe.data_name}/{self.name}"

    def check(self, recipe: "Recipe", where: str, earlier: list[StageSpec]) -> None:
        if self.name in recipe.sources:
            raise UserError(f"{where}.name", f"'{self.name}' is also a source name; both would be prepared into "
                            f"{recipe.paths.data}/{recipe.data_name}/{self.name}", "rename the stage or the source")


class SFTData(StageData):
    messages_field: str = "messages"
    _local: typing.ClassVar[str] = "local chat JSONL"


class SFTStage(OwnDataStage):
    """Supervised fine-tuning on chats, rendered with the recipe's chat template: the loss is on the
    assistant's turns only."""

    kind: Literal["sft"]
    data: SFTData


# The loss types of TRL's DPOTrainer (trl.trainer.dpo_config.DPOConfig.loss_type at trl 1.x; a test
# holds this list against the installed TRL), so that a typo fails at load time, not in the job.
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


class PreferenceData(StageData):
    """Preference pairs: a prompt, a chosen and a rejected response, either as message lists (the
    layout of HuggingFaceH4/ultrafeedback_binarized: `chosen`/`rejected` are whole conversations that
    end in the assistant turn) or as plain strings (a user prompt and two answers)."""

    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    max_pairs: Optional[Count] = Field(default=None, gt=0)  # read at most this many records
    # Pairs kept out of training for the held-out pair accuracy (smolrecipe.eval pairs:<name>),
    # chosen by a hash of the prompt, so a prompt is never on both sides and a rerun splits the same.
    heldout_fraction: float = Field(default=0.05, ge=0, lt=1)
    _local: typing.ClassVar[str] = "local JSONL/Parquet pairs"


class PreferenceStage(OwnDataStage):
    """Preference alignment of a chat model (smolrecipe.kinds.preference): DPO against the stage it
    starts from as the reference model, or ORPO (no reference model: an SFT loss plus an odds-ratio
    penalty), trained with TRL's trainers on both backends."""

    kind: Literal["preference"]
    data: PreferenceData
    method: Literal["dpo", "orpo"]
    # DPO: how strongly the policy is held to the reference (higher: closer). ORPO: lambda, the
    # weight of the odds-ratio term against the SFT loss. TRL's default for both is 0.1.
    beta: float = Field(default=0.1, gt=0)
    # DPO only: one of DPO_LOSS_TYPES (TRL's default: sigmoid), or several, summed with `loss_weights`
    # (e.g. [sigmoid, sft]: DPO plus the SFT loss on the chosen answers, RPO).
    loss_type: Optional[Union[str, list[str]]] = None
    loss_weights: Optional[list[float]] = None
    # Tokens of prompt + response; longer pairs are dropped when the data is prepared. Default and
    # maximum: training.sequence_length, the context the model was trained for.
    max_length: Optional[int] = Field(default=None, gt=0)

    def loss_types(self) -> list[str]:
        """The DPO loss types as a list (TRL's DPOConfig.loss_type); [] when not set."""
        if self.loss_type is None:
            return []
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    def compute_per_token(self) -> float:
        # A pair is two sequences (chosen, rejected), each a forward and backward pass (6N FLOPs per
        # token); DPO adds the reference model's forward over both (2N each).
        return 2 * (6 + 2) / 6 if self.method == "dpo" else 2.0

    def pair_length(self, recipe: "Recipe") -> int:
        return self.max_length or recipe.training.sequence_length

    def check(self, recipe: "Recipe", where: str, earlier: list[StageSpec]) -> None:
        super().check(recipe, where, earlier)
        parent = next(s for s in earlier if s.name == self.init_from)
        chat = [s.name for s in earlier if s.kind in ("sft", "preference")]
        if parent.kind not in ("sft", "preference"):
            raise UserError(f"{where}.init_from", f"'{self.init_from}' is a {parent.kind} stage; preference training "
                            "starts from a chat model (its prompts are rendered with the chat template)",
                            f"start from an SFT stage: {chat}" if chat else "add an sft stage before it")
        for field in ("loss_type", "loss_weights"):
            if getattr(self, field) is not None and self.method != "dpo":
                raise UserError(f"{where}.{field}", f"is a DPO setting; method is {self.method}",
                                f"remove {field}, or set method: dpo")
        for loss in self.loss_types():
            if loss not in DPO_LOSS_TYPES:
                close = difflib.get_close_matches(loss, DPO_LOSS_TYPES, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise UserError(f"{where}.loss_type", f"unknown DPO loss type '{loss}'", f"{hint}use one of {list(DPO_LOSS_TYPES)}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_types()):
            raise UserError(f"{where}.loss_weights", f"{len(self.loss_weights)} weight(s) for {len(self.loss_types())} loss type(s)",
                            "give one weight per loss_type")
        if self.max_length is not None and self.max_length > recipe.training.sequence_length:
            raise UserError(f"{where}.max_length", f"{self.max_length} tokens is longer than the context the model "
                            f"was trained for (training.sequence_length {recipe.training.sequence_length})",
                            f"use at most {recipe.training.sequence_length}")
        if self.load_optimizer:
            raise UserError(f"{where}.load_optimizer", "TRL's trainers start their own AdamW; the parent's moments "
                            "belong to another objective (and, on the cluster, to nanotron's optimizer)", "set it to false")


# Every kind of stage a recipe may list, by its `kind:` value.
STAGE_KINDS: dict[str, type[StageSpec]] = {"pretrain": PretrainStage, "anneal": AnnealStage, "long_context": LongContextStage,
                                            "sft": SFTStage, "preference": PreferenceStage}
AnyStage = Annotated[Union[PretrainStage, AnnealStage, LongContextStage, SFTStage, PreferenceStage], Field(discriminator="kind")]


@dataclass(frozen=True)
class StageContext:
    """The context a stage trains at: its windows, its RoPE base (inherited along init_from from the
    last context extension), and the longest window the model has been trained on so far."""

    sequence_length: int
    rope_theta: float
    max_position: int


@dataclass(frozen=True)
class Batch:
    """One optimizer step of a stage: the numbers every part of the project reads from here."""

    micro_batch_size: int  # sequences per micro-batch, per data-parallel rank
    grad_accumulation: int  # micro-batches per step, per rank
    global_batch: int  # sequences per optimizer step
    tokens_per_step: int


class DataJob(_Strict):
    """The data-preparation job (slurm/prepare_data.sh): CPUs only, on a partition of its own.

    `hub` says where the hub is reachable at this site:
    - `online`: the job's compute node reaches huggingface.co; it streams the hub sources itself
      (it is the chain's first job, and it does not set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE);
    - `login`: compute nodes are offline; run `python tools/prepare_data.py RECIPE --all` on the
      login node (inside tmux), and tools/submit.py starts the chain at the first training stage once
      every folder has its manifest.
    """

    partition: Optional[str] = None  # None: the site's default partition (no --partition)
    account: Optional[str] = None  # None: cluster.account
    qos: Optional[str] = None  # None: cluster.qos
    time: str = Field(default="24:00:00", pattern=r"^(\d+-)?\d+(:\d\d){0,2}$")  # a limit that is hit requeues the job
    cpus: Optional[int] = Field(default=None, gt=0)  # None: cluster.cpus_per_task; datatrove runs this many tasks at once
    mem_gb: Optional[int] = Field(default=None, gt=0)  # None: the partition's default (no --mem)
    hub: Literal["online", "login"] = "online"


class Cluster(_Strict):
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: str = "24:00:00"
    nodes: int = Field(default=1, gt=0)
    gpus_per_node: int = Field(ge=0)
    cpus_per_task: int = Field(gt=0)
    gpu_memory_gb: float = Field(gt=0)
    gpu_name: str = "GPU"
    data_job: DataJob = DataJob()


class Tracking(_Strict):
    project: str
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    model: ModelSpec
    tokenizer: TokenizerSpec
    paths: Paths
    training: Training
    parallelism: Parallelism
    sources: dict[str, Source]
    stages: list[AnyStage] = Field(min_length=1)
    cluster: Cluster
    tracking: Tracking
    max_epochs: float = Field(default=4.0, gt=0)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "Recipe":
        _check_model(self.model)
        _check_precision(self)
        _check_parallelism(self)
        _check_sources(self)
        _check_trained_tokenizer(self)
        _check_stages(self)
        return self

    # Batch arithmetic lives here because validation needs it (a budget below one batch is an error).
    def batch(self, stage: StageSpec) -> Batch:
        micro = stage.micro_batch_size or self.training.micro_batch_size
        accum = stage.grad_accumulation or self.training.grad_accumulation
        global_batch = micro * accum * self.parallelism.dp
        return Batch(micro, accum, global_batch, global_batch * self.context(stage.name).sequence_length)

    def context(self, name: str) -> StageContext:
        """The sequence length and RoPE base stage `name` trains with (see StageContext)."""
        stage = self.stage(name)
        if stage.init_from is None:
            parent = StageContext(self.training.sequence_length, self.model.rope_theta, self.training.sequence_length)
        else:
            parent = self.context(stage.init_from)
        length = getattr(stage, "sequence_length", None) or self.training.sequence_length
        theta = getattr(stage, "rope_theta", None) or parent.rope_theta
        return StageContext(length, theta, max(parent.max_position, length))

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def data_name(self) -> str:
        """The folder under paths.data with this recipe's prepared data."""
        return self.paths.dataset or self.name

    def hash(self) -> str:
        """Content hash of the validated recipe (comments and key order do not change it)."""
        data = self.model_dump(mode="json", by_alias=True)
        if data["tokenizer"]["train"] is None:  # a recipe with a `base` keeps the hash it had before `train` existed
            del data["tokenizer"]["train"]
        if data["paths"]["dataset"] is None:  # and one without `paths.dataset` the hash it had before that
            del data["paths"]["dataset"]
        for source in data["sources"].values():  # and sources without `needles` or `messages_field` theirs
            for key in ("needles", "messages_field"):
                if source[key] is None:
                    del source[key]
        canonical = json.dumps(data, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _check_model(model: ModelSpec) -> None:
    h, q, kv = model.hidden_size, model.num_attention_heads, model.num_key_value_heads
    if q % kv:
        divisors = [d for d in range(1, q + 1) if q % d == 0]
        raise UserError(
            "model.num_key_value_heads",
            f"{kv} KV heads do not divide {q} attention heads (grouped-query attention needs whole groups)",
            f"use one of {divisors}",
        )
    if h % q:
        raise UserError(
            "model.num_attention_heads", f"{q} heads do not divide hidden_size {h}",
            "pick a head count that divides hidden_size",
        )
    if (h // q) % 2:
        raise UserError(
            "model.num_attention_heads", f"head dimension {h // q} is odd; rotary embeddings rotate pairs",
            "pick a head count that makes hidden_size / heads even",
        )


def _check_precision(recipe: Recipe) -> None:
    if recipe.model.dtype == "float32" and recipe.training.optimizer.accumulate_grad_in_fp32:
        # nanotron's FP32GradientAccumulator asserts its parameters are not float32 already.
        raise UserError(
            "training.optimizer.accumulate_grad_in_fp32",
            "a float32 model already accumulates its gradients in fp32; nanotron's FP32GradientAccumulator refuses it",
            "set accumulate_grad_in_fp32: false (or train in model.dtype: bfloat16)",
        )


def _check_parallelism(recipe: Recipe) -> None:
    par, cl = recipe.parallelism, recipe.cluster
    if par.tp > 1 and recipe.model.num_key_value_heads % par.tp:
        raise UserError(
            "parallelism.tp", f"tp={par.tp} does not divide {recipe.model.num_key_value_heads} KV heads",
            "use a tp that divides num_key_value_heads",
        )
    world = par.world
    gpus = cl.nodes * cl.gpus_per_node
    if gpus and world != gpus:
        raise UserError(
            "parallelism.dp", f"dp*tp*pp = {world} but the cluster has {gpus} GPUs ({cl.nodes} node(s) x {cl.gpus_per_node})",
            f"set dp to {gpus // (par.tp * par.pp)} or change cluster.gpus_per_node",
        )


def _check_budget(stage: StageSpec, field: str, tokens_per_step: int) -> None:
    if (stage.tokens is None) == (stage.steps is None):
        raise UserError(
            f"{field}.tokens", "give exactly one of `tokens` (budget) or `steps`",
            "write e.g. `tokens: 14_024_704_000` and drop `steps`, or the reverse",
        )
    if stage.steps is not None and stage.steps <= 0:
        raise UserError(f"{field}.steps", f"{stage.steps} is not a positive number of steps", "use steps >= 1")
    if stage.tokens is not None:
        if stage.tokens <= 0:
            raise UserError(f"{field}.tokens", f"budget {stage.tokens} is not positive", "give a positive token budget")
        if stage.tokens < tokens_per_step:
            raise UserError(
                f"{field}.tokens",
                f"budget {stage.tokens:,} tokens is smaller than one global batch ({tokens_per_step:,} tokens)",
                f"raise it to at least {tokens_per_step} or shrink micro_batch_size/grad_accumulation",
            )


def _check_lr(lr: LRSchedule, field: str) -> None:
    if lr.min > lr.peak:
        raise UserError(f"{field}.min", f"minimum LR {lr.min} is above the peak {lr.peak}", "set min <= peak")


def _check_stages(recipe: Recipe) -> None:
    seen: list[str] = []
    for i, stage in enumerate(recipe.stages):
        where = f"stages[{i}]"
        if stage.name in seen:
            raise UserError(f"{where}.name", f"stage name '{stage.name}' is used twice", "give each stage a unique name")
        _check_earlier(recipe, stage.init_from, f"{where}.init_from", seen)  # first: the batch follows init_from's context
        _check_budget(stage, where, recipe.batch(stage).tokens_per_step)
        _check_lr(stage.lr, f"{where}.lr")
        if i > 0 and stage.init_from is None:
            raise UserError(
                f"{where}.init_from", "a later stage must say which stage's final checkpoint it starts from",
                f"add `init_from: {seen[-1]}`",
            )
        if i == 0 and stage.load_optimizer:
            raise UserError(f"{where}.load_optimizer", "the first stage has no earlier optimizer state", "set it to false")
        stage.check(recipe, where, [recipe.stage(name) for name in seen])
        seen.append(stage.name)


def _check_earlier(recipe: Recipe, ref: str | None, field: str, seen: list[str]) -> None:
    """A reference to another stage (init_from, replay.from) must name an earlier one."""
    if ref is not None and ref not in seen:
        problem = (
            f"'{ref}' is this stage itself or a later stage" if ref in [s.name for s in recipe.stages]
            else f"'{ref}' is not a stage of this recipe"
        )
        raise UserError(field, problem, f"use an earlier stage: {seen}" if seen else "remove it (the first stage has nothing before it)")


def _check_sources(recipe: Recipe) -> None:
    for name, source in recipe.sources.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise UserError(f"sources.{name}", "a source name becomes a folder name", "use lowercase letters, digits and _")
        for i, spec in enumerate(source.filters):
            if spec.name not in FILTER_NAMES:
                close = difflib.get_close_matches(spec.name, FILTER_NAMES, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise UserError(f"sources.{name}.filters[{i}].name", f"unknown filter '{spec.name}'",
                                  f"{hint}use one of {list(FILTER_NAMES)}")
        if source.needles is not None:
            _check_needles(recipe, name, source.needles)
        if source.text_template is not None:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(source.text_template) if f]
            except ValueError as exc:
                raise UserError(f"sources.{name}.text_template", f"not a format string ({exc})",
                                  "write it like \"{problem}\\n\\n{solution}\"") from None
            if not fields:
                raise UserError(f"sources.{name}.text_template", "names no field", "put the record's fields in braces: {field}")


def _check_needles(recipe: Recipe, name: str, needles: NeedleSource) -> None:
    where = f"sources.{name}.needles"
    plain = [n for n, s in recipe.sources.items() if s.needles is None]
    if needles.haystack not in plain:
        problem = (f"'{needles.haystack}' is this source itself or another needle source" if needles.haystack in recipe.sources
                   else f"'{needles.haystack}' is not a source of this recipe")
        raise UserError(f"{where}.haystack", problem, f"fill the haystacks with the text of one of {plain}")
    for length in needles.lengths:
        if length < 64:
            raise UserError(f"{where}.lengths", f"{length} tokens cannot hold a haystack, a needle and the question",
                            "use lengths of at least 64 tokens")


def _check_trained_tokenizer(recipe: Recipe) -> None:
    train = recipe.tokenizer.train
    if train is None:
        return
    for name in train.sources or []:
        if name not in recipe.sources:
            raise UserError("tokenizer.train.sources", f"unknown source '{name}'",
                            f"use some of {sorted(recipe.sources)} (or leave it out: every source)")
        if recipe.sources[name].needles is not None:
            raise UserError("tokenizer.train.sources", f"'{name}' is a needle source, generated with the tokenizer",
                            f"train on its haystack source '{recipe.sources[name].needles.haystack}' instead")
        if recipe.sources[name].messages_field is not None:
            raise UserError("tokenizer.train.sources", f"'{name}' is a chat source, rendered with the tokenizer's chat template",
                            "leave it out (the template's special tokens are in the vocabulary whatever the text)")
    if train.sources and len(set(train.sources)) < len(train.sources):
        raise UserError("tokenizer.train.sources", "a source is listed twice", "list each source once")
    if recipe.model.vocab_size != train.vocab_size:
        raise UserError("model.vocab_size", f"{recipe.model.vocab_size:,} but tokenizer.train.vocab_size is {train.vocab_size:,} "
                        "(the model's embedding table has one row per token)", f"set model.vocab_size: {train.vocab_size}")


def _check_mixture(recipe: Recipe, stage: PretrainStage, where: str) -> None:
    total = sum(mix.share for mix in stage.mixture.values())
    if abs(total - 1) > SHARE_TOLERANCE:
        raise UserError(
            f"{where}.mixture", f"domain shares sum to {total:g}, not 1",
            "make the `share` values of the domains add up to 1",
        )
    for domain, mix in stage.mixture.items():
        if domain not in DOMAINS:
            raise UserError(f"{where}.mixture.{domain}", f"unknown domain '{domain}'", f"use one of {list(DOMAINS)}")
        if not mix.sources:
            raise UserError(f"{where}.mixture.{domain}.sources", "no sources listed", "list at least one source")
        sub = sum(mix.sources.values())
        if abs(sub - 1) > SHARE_TOLERANCE:
            raise UserError(
                f"{where}.mixture.{domain}.sources", f"source shares sum to {sub:g}, not 1",
                "make the shares inside the domain add up to 1",
            )
        for name, share in mix.sources.items():
            field = f"{where}.mixture.{domain}.sources.{name}"
            if name not in recipe.sources:
                raise UserError(field, f"unknown source '{name}'", f"define it under `sources:` or use one of {sorted(recipe.sources)}")
            if recipe.sources[name].domain != domain:
                raise UserError(
                    field, f"source '{name}' belongs to domain '{recipe.sources[name].domain}', not '{domain}'",
                    f"move it under mixture.{recipe.sources[name].domain}",
                )
            if share <= 0:
                raise UserError(field, f"share {share} is not positive", "use a share > 0 or drop the source")
            needles = recipe.sources[name].needles
            window = recipe.context(stage.name).sequence_length
            if needles is not None and max(needles.lengths) > window:
                raise UserError(field, f"needle documents of {max(needles.lengths):,} tokens (sources.{name}.needles.lengths) are "
                                f"longer than this stage's {window:,}-token windows: the question would be cut from its needle",
                                f"mix them into a stage with longer windows, or keep needles.lengths <= {window}")
