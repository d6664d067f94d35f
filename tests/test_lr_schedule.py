"""The local backend's LR at every optimizer step equals nanotron's for the generated config.

`nanotron_lr` restates nanotron's schedule (helpers.lr_scheduler_builder at the pinned commit) from
the rendered `learning_rate_scheduler` section, phase by phase, so the comparison goes through the
config nanotron will actually read, not through our plan. Where nanotron is importable, its own
builder is compared as well.
"""

import math

import pytest
import torch
from conftest import step_tokens

from smolrecipe.backends.lr_schedule import build_scheduler, stage_lrs
from smolrecipe.backends.nanotron.generate import render


def nanotron_lr(s: dict, step: int) -> float:
    """nanotron's LR at 0-based scheduler step `step` for a rendered learning_rate_scheduler section."""
    peak, low, warmup = s["learning_rate"], s["min_decay_lr"], s["lr_warmup_steps"]
    start = s["lr_decay_starting_step"] if s["lr_decay_starting_step"] is not None else warmup
    decay = s["lr_decay_steps"]
    if warmup == 0 and decay == 0:
        return peak
    if step <= warmup:  # the warmup branch also owns step == warmup
        return peak * step / max(warmup, 1) if s["lr_warmup_style"] == "linear" else peak
    if step < start:
        return peak
    if step < start + decay:
        t = (step - start) / decay
        shape = {"cosine": (1 + math.cos(math.pi * t)) / 2, "linear": 1 - t, "1-sqrt": 1 - math.sqrt(t)}
        return low + (peak - low) * shape[s["lr_decay_style"]]
    return low


def trl_as_nanotron(lr: dict) -> dict:
    """A TRL stage's rendered lr_schedule in the terms of nanotron's learning_rate_scheduler section."""
    decay_start = lr["decay_start"] if lr["decay_start"] != lr["warmup_steps"] else None
    return {"learning_rate": lr["peak"], "min_decay_lr": lr["min"], "lr_warmup_steps": lr["warmup_steps"],
            "lr_warmup_style": lr["warmup_style"] if lr["warmup_steps"] else "constant", "lr_decay_style": lr["decay"],
            "lr_decay_steps": lr["decay_steps"], "lr_decay_starting_step": decay_start}


def optimizer_lrs(stage) -> list[float]:
    """The LR the optimizer sees at each of the stage's steps, stepping exactly as a trainer does."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=stage.lr.peak)
    scheduler = build_scheduler(optimizer, stage)
    seen = []
    for _ in range(stage.train_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


LR_VARIANTS = {
    "as_written": {},
    "no_warmup": {"warmup_steps": 0},
    "constant_warmup": {"warmup_style": "constant"},
    # warmup-stable-decay: the stable phase's length is set per recipe below
    "wsd_linear": {"decay": "linear", "decay_starting_step": None},
    "wsd_1_sqrt": {"decay": "1-sqrt", "decay_starting_step": None, "min": 0.0},
}
STABLE_STEPS = {"tiny": 2, "llama500m": 500}


@pytest.mark.parametrize("variant", LR_VARIANTS)
@pytest.mark.parametrize("recipe_name", ["tiny", "llama500m"])
def test_lr_equals_nanotron_at_every_step(recipe_name, variant, root, tmp_path, write_recipe):
    import yaml

    data = yaml.safe_load((root / "recipes" / f"{recipe_name}.yaml").read_text())
    for stage in data["stages"]:
        stage["lr"].update(LR_VARIANTS[variant])
        if "decay_starting_step" in LR_VARIANTS[variant]:
            stage["lr"]["decay_starting_step"] = stage["lr"]["warmup_steps"] + STABLE_STEPS[recipe_name]
    rendered = render(write_recipe(data))
    configs = {name: yaml.safe_load(text) for name, text in rendered.files.items() if name.endswith(".yaml")}
    checked = 0
    for stage in rendered.plan.stages:
        config = configs[f"{stage.name}.yaml"]
        if config.get("engine") == "trl":  # the preference stage: our scheduler replaces TRL's, with nanotron's formula
            section, steps = trl_as_nanotron(config["lr_schedule"]), config["arguments"]["max_steps"]
        else:
            section, steps = config["optimizer"]["learning_rate_scheduler"], config["tokens"]["train_steps"]
        assert steps == stage.train_steps
        want = [nanotron_lr(section, k) for k in range(steps)]
        got = optimizer_lrs(stage) if steps <= 5000 else stage_lrs(stage)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), stage.name
        checked += 1
    assert checked == len(rendered.plan.stages)


def test_schedule_spot_values(tiny_dict, write_recipe):
    """Spot values, so a shared misreading of nanotron in both the oracle and the code still fails."""
    tiny_dict["stages"][0]["tokens"] = 32 * step_tokens(tiny_dict)  # 32 steps
    tiny_dict["stages"][0]["lr"] = {"peak": 3e-3, "warmup_steps": 4, "min": 5e-4, "decay": "cosine"}
    stage = render(write_recipe(tiny_dict)).plan.stage("stage1")
    lrs = stage_lrs(stage)
    assert lrs[0] == 0.0  # nanotron's linear warmup starts at 0, not at the minimum
    assert lrs[2] == pytest.approx(1.5e-3)
    assert lrs[4] == pytest.approx(3e-3)  # the peak is reached at the end of warmup
    assert lrs[18] == pytest.approx(5e-4 + 2.5e-3 * 0.5)  # halfway through the cosine (14 of 28)
    assert lrs[-1] > 5e-4 and lrs[-1] == pytest.approx(5e-4, rel=0.02)


