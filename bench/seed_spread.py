"""How much the demo's answers depend on the seed: a recipe trained from scratch once per seed, the
world suite scored on every stage, side by side.

    python bench/seed_spread.py                                   # recipes/tiny.yaml, seeds 42 43 44 (~10 min each, 2 cores)
    python bench/seed_spread.py --recipe my_variant.yaml --seeds 42 43 44 45 --out runs/bench/my_variant_seeds.json

One seed is one run of a demo that is deterministic on one machine; another machine (other CPU
kernels) or any change to the recipe draws another. A change to the demo is worth keeping when it
holds over seeds, so this trains, for each seed, a copy of the recipe that differs only in
`training.seed` (weight init and batch order) and `paths.runs` (<runs>/bench/seed_spread/<recipe>/seed-<S>),
through its pretraining stages and SFT (tools/train_local.py; the preference and context-extension
stages are left out), and scores every trained stage on the world suite (tools/run_eval.py --recipe:
Question/Answer prompts for the base stages, the chat template for SFT). The data is the recipe's
own prepared folders (`make data` first). Interrupted, it resumes: finished stages and scores are kept.

A change to SFT alone need not retrain the bases: `--bases <an earlier run's work folder>` takes each
seed's pretraining stages (checkpoints and scores) from that run and trains and scores only SFT here
(~2.5 minutes a seed instead of ~10). It refuses when anything the pretraining stages depend on
differs between the two recipes.

    python bench/seed_spread.py --recipe my_sft_variant.yaml --bases runs/bench/seed_spread/tiny --out runs/bench/sft_variant.json

Prints one row per seed and stage (facts by likelihood, facts and sums answered) and the mean and the
worst seed of each, and writes JSON.
"""

from __future__ import annotations

import sys  # noqa: I001 (must run first)

# bench/ holds tokenize.py, named like a standard-library module that transformers imports:
# take this script's folder off the import path before anything imports `tokenize`.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
METRICS = {"mc_fact": "facts (likelihood)", "em_fact": "facts answered", "em_arithmetic": "sums answered"}
TRAINED_KINDS = ("pretrain", "sft")


def seed_recipe(recipe_path: Path, seed: int, runs: Path, out: Path) -> tuple[Path, list[str], list[str]]:
    """out/<recipe>-seed<S>.yaml: the recipe with only the seed and the runs folder changed; also the
    stages it trains and those it leaves out."""
    raw = yaml.safe_load(recipe_path.read_text())
    raw.setdefault("training", {})["seed"] = seed
    raw.setdefault("paths", {})["runs"] = str(runs)  # the data paths stay: the copy reads the recipe's prepared data
    trained = [s["name"] for s in raw["stages"] if s.get("kind", "pretrain") in TRAINED_KINDS]
    left_out = [s["name"] for s in raw["stages"] if s["name"] not in trained]
    path = out / f"{raw['name']}-seed{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, trained, left_out


def link_bases(bases: Path, seed: int, copy: Path, runs: Path, pretraining: list[str]) -> None:
    """Link the pretraining stages (run folders and world-suite scores) of the earlier run of `seed`
    under `bases` into `runs`; refuse unless the earlier run's recipe copy agrees with `copy` on everything
    those stages depend on (all but the stages after them, the runs folder and the descriptions)."""
    earlier = bases / copy.name
    if not earlier.is_file():
        raise SystemExit(f"error: --bases {bases}: no {copy.name} there (the recipe copy an earlier run of this "
                         f"bench writes); fix: give the work folder of a run with the same recipe name and seeds")
    old, new = (yaml.safe_load(earlier.read_text()), yaml.safe_load(copy.read_text()))
    for raw in (old, new):
        raw["paths"].pop("runs", None)
        raw.pop("description", None)
        raw["stages"] = [stage for stage in raw["stages"] if stage["name"] in pretraining]
    if old != new:
        differs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SystemExit(f"error: --bases {bases}: {earlier.name} differs from this recipe in {', '.join(differs)}, "
                         f"which the pretraining stages {', '.join(pretraining)} depend on; fix: train them here "
                         f"(leave out --bases), or change only the stages after them")
    name = new["name"]
    for stage in pretraining:
        for part in (Path(name) / stage, Path(name) / "eval" / stage):
            source, target = bases / f"seed-{seed}" / part, runs / part
            if not source.exists():
                raise SystemExit(f"error: --bases {bases}: {source} is missing; fix: let that run finish first")
            if target.exists() and not target.is_symlink():
                raise SystemExit(f"error: --bases {bases}: {target} holds a stage trained here; fix: give another --work")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():
                target.symlink_to(source.resolve(), target_is_directory=True)


def run_tool(*args: str) -> None:
    """Run one of the project's tools quietly (a line per seed says where it is); on failure, show its end."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"error: {' '.join(args[:2])} failed (exit {done.returncode}); its output ends above")


def world_scores(runs: Path, name: str, stages: list[str]) -> dict[str, dict[str, float]]:
    """{stage: {metric: value}} from each stage's newest world-suite result beside the run, read as the
    run report reads them (smolrecipe.report.evals)."""
    from smolrecipe.report.evals import best_results, read_result

    files = [(path, data) for path in (runs / name / "eval").glob("*/step-*/world.json") if (data := read_result(path))]
    newest = {}
    for (stage, step, task), (metrics, _model) in best_results(files).items():
        if task == "qa:world" and step >= newest.get(stage, (-1, None))[0]:
            newest[stage] = (step, metrics)
    scores = {}
    for stage in stages:
        if stage not in newest:
            raise SystemExit(f"error: no world-suite result for {stage} under {runs / name / 'eval'}")
        scores[stage] = {k: newest[stage][1][k] for k in METRICS}
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--work", type=Path, help="where the runs go (default: <paths.runs>/bench/seed_spread/<recipe>)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/seed_spread.json"))
    parser.add_argument("--bases", type=Path, help="an earlier run's work folder: take each seed's pretraining stages from it, "
                        "train and score only SFT")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 2:
        parser.error("--seeds: give two or more different seeds (a spread needs two)")

    from rich.console import Console
    from rich.table import Table

    from smolrecipe.atomic import write_json
    from smolrecipe.recipe.envpaths import resolve_recipe
    from smolrecipe.recipe.loading import load_recipe

    recipe = resolve_recipe(load_recipe(str(args.recipe)))
    work = (args.work or Path(recipe.paths.runs) / "bench" / "seed_spread" / recipe.name).resolve()
    per_seed, seconds = {}, {}
    for i, seed in enumerate(args.seeds, 1):
        runs = work / f"seed-{seed}"
        path, trained, left_out = seed_recipe(args.recipe, seed, runs, work)
        start = time.perf_counter()
        if args.bases:
            linked = [s.name for s in recipe.stages if s.kind == "pretrain"]
            link_bases(args.bases.resolve(), seed, path, runs, linked)
            left_out = left_out + linked
            print(f"[{i}/{len(args.seeds)}] seed {seed}: {', '.join(linked)} from {args.bases}", flush=True)
        print(f"[{i}/{len(args.seeds)}] seed {seed}: training {', '.join(s for s in trained if s not in left_out)} -> {runs}",
              flush=True)
        # --resume: a stage cut off mid-way (a killed bench) continues from its newest checkpoint
        run_tool("tools/train_local.py", str(path), "--stage", "all", "--resume", *(f"--except={s}" for s in left_out))
        print(f"[{i}/{len(args.seeds)}] seed {seed}: scoring the world suite", flush=True)
        run_tool("tools/run_eval.py", "--recipe", str(path), "--suite", "world")
        seconds[seed] = round(time.perf_counter() - start, 1)
        per_seed[seed] = world_scores(runs, recipe.name, trained)
        last = per_seed[seed][trained[-1]]
        print(f"[{i}/{len(args.seeds)}] seed {seed}: {trained[-1]} " + ", ".join(f"{METRICS[k]} {v:.2f}" for k, v in last.items())
              + f" ({seconds[seed]:.0f} s)", flush=True)

    stages = list(next(iter(per_seed.values())))
    summary = {stage: {k: {"mean": statistics.mean(per_seed[s][stage][k] for s in per_seed),
                           "min": min(per_seed[s][stage][k] for s in per_seed),
                           "max": max(per_seed[s][stage][k] for s in per_seed)} for k in METRICS} for stage in stages}
    table = Table(title=f"world suite over seeds: {args.recipe.name} (held-out items; one run per seed)")
    for col in ("stage", "seed", *METRICS.values()):
        table.add_column(col, justify="right")
    for stage in stages:
        for seed in per_seed:
            table.add_row(stage, str(seed), *(f"{per_seed[seed][stage][k]:.2f}" for k in METRICS))
        table.add_row(stage, "mean", *(f"{summary[stage][k]['mean']:.2f}" for k in METRICS))
        table.add_row(stage, "worst", *(f"{summary[stage][k]['min']:.2f}" for k in METRICS), end_section=True)
    Console().print(table)
    write_json(args.out, {"recipe": str(args.recipe), "seeds": args.seeds, "work": str(work), "seconds": seconds,
                          "per_seed": {str(s): v for s, v in per_seed.items()}, "summary": summary})
    final = summary[stages[-1]]
    print(f"seed spread: {stages[-1]} over {len(per_seed)} seeds, facts answered mean {final['em_fact']['mean']:.2f} "
          f"(worst {final['em_fact']['min']:.2f}), sums mean {final['em_arithmetic']['mean']:.2f} "
          f"(worst {final['em_arithmetic']['min']:.2f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
