"""The evaluation suites a recipe can name: eval/suites.yaml, read and checked field by field.

A leaf the recipe's validation reads (an unknown suite name is a recipe error at load time) and the
eval runner expands; nothing here imports lighteval or torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smolrecipe import PROJECT_ROOT
from smolrecipe.errors import UserError

SUITES_FILE = PROJECT_ROOT / "eval" / "suites.yaml"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name on the hub; anything else is a path
GROUP_SUITES = {"all": ["tier2", "tier3", "tier4", "gsm8k"]}


class SliceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    subset: str | None = None
    split: str = "train"
    text_field: str = "text"


class QASpec(BaseModel):
    """A closed-book QA item file (smolrecipe.eval.qa), run as the task qa:<name>."""

    model_config = ConfigDict(extra="forbid")
    source: str  # a JSONL file; relative to the checkout


class PairsSpec(BaseModel):
    """A file of held-out preference pairs (smolrecipe.eval.pairs), run as the task pairs:<name>."""

    model_config = ConfigDict(extra="forbid")
    source: str  # a Parquet or JSONL file; ${VAR} / ${VAR:-default} as in a recipe's paths; relative to the checkout


class NeedleSpec(BaseModel):
    """A needle-in-a-haystack grid (smolrecipe.eval.needle), run as the task needle:<name>."""

    model_config = ConfigDict(extra="forbid")
    haystack: str  # a local JSONL / text file or folder of plain text; ${VAR} / ${VAR:-default}; relative to the checkout
    text_field: str = "text"
    lengths: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)  # prompt tokens, question included
    depths: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=1)  # 0: the haystack's start, 1: its end
    per_cell: int = Field(default=4, gt=0)  # items per (length, depth)
    seed: int = 0
    digits: int = Field(default=4, ge=1, le=18)  # of the needle's value (smolrecipe.data.needles.MAX_DIGITS)

    @field_validator("lengths", "depths")
    @classmethod
    def _distinct(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError("the values must be distinct (each is a row or column of the grid)")
        return values


class Suite(BaseModel):
    """One suite of eval/suites.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, gt=0)  # items per task (lighteval's max_samples)
    token_budget: int = Field(default=200_000, gt=0)  # tier-2 tokens per slice
    max_new_tokens: int = Field(default=256, gt=0)  # generation length of tier 4, GSM8K and qa
    slices: dict[str, SliceSpec] = {}  # this suite's own tier-2 slices, over the file's
    qa: dict[str, QASpec] = {}  # this suite's own qa item files, over the file's
    pairs: dict[str, PairsSpec] = {}  # this suite's own pair files, over the file's
    needles: dict[str, NeedleSpec] = {}  # this suite's own needle grids, over the file's
    # download: a task reads its hub dataset when no local copy is found; skip: such a task is
    # skipped, with a note in the results (for suites that must run offline, e.g. make demo's quick)
    hub: Literal["download", "skip"] = "download"


class SuitesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    local_copies: list[str] = []
    slices: dict[str, SliceSpec] = {}
    qa: dict[str, QASpec] = {}
    pairs: dict[str, PairsSpec] = {}
    needles: dict[str, NeedleSpec] = {}
    suites: dict[str, dict[str, Any]]


def load_suites(path: Path = SUITES_FILE) -> tuple[dict[str, Suite], dict[str, Any]]:
    """(suites by name, the file's top level) from eval/suites.yaml, checked field by field."""
    raw = yaml.safe_load(path.read_text())
    where = "suites.yaml"
    try:
        SuitesFile.model_validate(raw)
        suites = {}
        for name, spec in raw["suites"].items():
            where = f"suites.{name}"
            suites[name] = Suite(name=name, **spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        field_name = ".".join([where, *(str(part) for part in err["loc"])])
        raise UserError(field_name, f"{err['msg']} (in {path})", "a suite takes tasks (at least one), limit, token_budget "
                          "and max_new_tokens (each > 0), slices ({name: {source, subset, split, text_field}}), "
                          "qa and pairs ({name: {source}}), needles ({name: {haystack, text_field, lengths (> 0), "
                          "depths (in [0, 1]), per_cell (> 0), seed, digits (1 to 18)}}) and hub (download or skip)") from None
    return suites, raw


def suite_names(path: Path = SUITES_FILE) -> list[str]:
    return [*load_suites(path)[0], *GROUP_SUITES]


def expand_suite(name: str, suites: dict[str, Suite]) -> list[Suite]:
    if name in GROUP_SUITES:
        return [suites[n] for n in GROUP_SUITES[name]]
    if name not in suites:
        raise UserError("--suite", f"unknown suite '{name}'", f"use one of {', '.join([*suites, *GROUP_SUITES])}")
    return [suites[name]]
