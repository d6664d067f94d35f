"""configs/ is generated from recipes/: a committed file that drifts from a fresh render fails here."""

from pathlib import Path

import make_config  # tools/ is on sys.path (conftest.py)
import pytest

from smolrecipe.backends.nanotron.generate import GENERATED_MARK, render, write_atomically

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe_path", RECIPES, ids=[p.stem for p in RECIPES])
def test_committed_configs_match_their_recipe(root, recipe_path, monkeypatch):
    monkeypatch.chdir(root)  # the header names the recipe by its path relative to the repository
    rendered = render(recipe_path.relative_to(root))
    folder = root / "configs" / rendered.recipe.name
    committed = {p.name: p.read_text() for p in folder.glob("*.yaml")}
    assert set(committed) == set(rendered.files), f"run `make configs`: {folder} has other files than the recipe's stages"
    for name, text in rendered.files.items():
        assert committed[name] == text, f"{folder / name} drifted from {recipe_path.name}; run `make configs`"


def test_cli_regenerates_byte_identically(root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(root)
    out = tmp_path / "llama500m"
    assert make_config.main(["recipes/llama500m.yaml", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for committed in (root / "configs" / "llama500m").glob("*.yaml"):
        assert (out / committed.name).read_bytes() == committed.read_bytes()
    assert "492,110,848" in printed and "DOES NOT FIT" in printed
    summary = printed.strip().splitlines()[-1]
    assert "wrote 6 configs" in summary and "492.11M params" in summary and "fits" in summary


def test_write_is_atomic_and_prunes_only_generated_stale_files(tmp_path):
    out = tmp_path / "cfg"
    write_atomically({"a.yaml": f"{GENERATED_MARK} x\n", "b.yaml": f"{GENERATED_MARK} y\n"}, out)
    (out / "notes.yaml").write_text("mine\n")
    write_atomically({"a.yaml": f"{GENERATED_MARK} z\n"}, out)
    assert sorted(p.name for p in out.iterdir()) == ["a.yaml", "notes.yaml"]  # b was ours and is gone
    assert (out / "a.yaml").read_text().endswith("z\n")
    assert not list(out.glob(".staging-*"))


def test_check_says_plainly_when_nanotron_is_skipped(root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(root)
    # the preflight reads the data folders: not the checkout's runs/data, which another recipe may have prepared
    monkeypatch.setenv("SMOLRECIPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(make_config, "nanotron_available", lambda: False)
    assert make_config.main(["recipes/tiny.yaml", "--check", "--quiet", "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "match nanotron's schema" in out
    assert "get_config_from_file and comparing its LR scheduler with ours were SKIPPED" in out


def test_resolve_expands_paths_and_resumes_an_interrupted_stage(root, tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.chdir(root)
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    out = tmp_path / "job"
    assert make_config.main(["recipes/llama500m.yaml", "--resolve", "--quiet", "--out", str(out)]) == 0
    stage2 = yaml.safe_load((out / "stage2.yaml").read_text())
    ck = stage2["checkpoints"]
    assert ck["checkpoints_path"] == f"{tmp_path}/scratch/smolrecipe/runs/llama500m/stage2/checkpoints"
    assert ck["resume_checkpoint_path"].endswith("/stage1/checkpoints/53500") and ck["load_lr_scheduler"] is False
    assert "${" not in (out / "stage2.yaml").read_text().split("\n", 3)[3]  # header aside, nothing unresolved

    # stage 2 was preempted after writing checkpoint 3000: the job resumes it, not stage 1's end
    own = tmp_path / "scratch/smolrecipe/runs/llama500m/stage2/checkpoints"
    own.mkdir(parents=True)
    (own / "latest.txt").write_text("3000")
    assert make_config.main(["recipes/llama500m.yaml", "--resolve", "--quiet", "--out", str(out)]) == 0
    assert "note: stage2 has checkpoints of its own" in capsys.readouterr().out
    ck = yaml.safe_load((out / "stage2.yaml").read_text())["checkpoints"]
    assert ck["resume_checkpoint_path"] == str(own)
    assert ck["load_lr_scheduler"] is True and ck["load_optimizer"] is True
    stage3 = yaml.safe_load((out / "stage3.yaml").read_text())["checkpoints"]
    assert stage3["resume_checkpoint_path"].endswith("/stage2/checkpoints/22717")  # untouched
