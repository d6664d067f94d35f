"""One error type (UserError), one format (`<source>: <field>: <problem>; fix: <fix>`), one line
and exit status 2 from every tool; Ctrl-C is one line and 130; recipes are read strictly (text,
no key twice) and their relative paths point into the checkout from any working directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smolrecipe import PROJECT_ROOT, cli
from smolrecipe.errors import UserError
from smolrecipe.recipe.envpaths import path_fields, project_path, resolve_recipe
from smolrecipe.recipe.loading import RecipeLoader, load_recipe

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "tiny.yaml"
FORMAT = re.compile(r"^(?:[^\n]+: )?[^\n]+: [^\n]+; fix: [^\n]+$")  # [source: ]field: problem; fix: fix


def one_line(err: UserError) -> str:
    line = err.line()
    assert FORMAT.match(line) and "\n" not in line, line
    return line


# ------------------------------------------------------------------------------------------- one format


def test_conversion_errors_are_user_errors_in_the_one_format(tmp_path):
    from smolrecipe.backends.nanotron.convert import hf_to_nanotron

    with pytest.raises(UserError) as err:
        hf_to_nanotron(tmp_path, tmp_path / "out")
    assert one_line(err.value) == (f"{tmp_path}: no config.json; "
                                   "fix: pass a transformers model folder (config.json + *.safetensors)")
    with pytest.raises(UserError) as err:
        hf_to_nanotron(tmp_path, tmp_path.parent)
    assert one_line(err.value) == f"{tmp_path.parent}: the output folder would replace the input {tmp_path}; fix: write to a new folder"


def test_suite_file_errors_are_user_errors_in_the_one_format(tmp_path):
    from smolrecipe.eval.checks import load_suite

    suite = tmp_path / "suite.jsonl"
    suite.write_text("not json\n")
    with pytest.raises(UserError) as err:
        load_suite(suite)
    assert one_line(err.value).startswith(f"{suite} line 1: not JSON (")
    assert err.value.fix == "write one JSON object per line"


def test_no_hand_formatted_error_lines_are_left():
    """`fix:` is written by UserError.line() alone, and no tool ends with a SystemExit message
    (the nanotron entry point's engine-side checks aside: they run inside torchrun's workers)."""
    engine = ROOT / "smolrecipe" / "backends" / "nanotron" / "train.py"
    own = {ROOT / "smolrecipe" / "errors.py", ROOT / "smolrecipe" / "cli.py"}
    offenders = []
    for path in sorted([*(ROOT / "smolrecipe").rglob("*.py"), *(ROOT / "tools").glob("*.py")]):
        text = path.read_text()
        if path not in own and re.search(r"""["'][^"'\n]*\b[Ff]ix: """, text):
            offenders.append(f"{path.relative_to(ROOT)}: a hand-formatted 'fix:'")
        if path != engine and re.search(r"raise SystemExit\(f?[\"']", text):
            offenders.append(f"{path.relative_to(ROOT)}: raise SystemExit(<message>)")
        if "ConversionError" in text:
            offenders.append(f"{path.relative_to(ROOT)}: ConversionError")
    assert offenders == []


def test_a_template_that_is_not_prefix_stable_is_a_user_error():
    from smolrecipe.data.chats import conversation_records

    class Unstable:  # renders the last turn differently from the same turn followed by another
        eos_token = bos_token = bos_token_id = None

        def __call__(self, text):
            return type("Ids", (), {"input_ids": []})()

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            return "".join(f"[{m['content']}{'!' if i == len(messages) - 1 else ''}]" for i, m in enumerate(messages))

    with pytest.raises(UserError) as err:
        conversation_records([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], Unstable())
    assert one_line(err.value).startswith("tokenizer.chat_template: the template renders a turn differently")


# ------------------------------------------------------------------------------------------- recipe files


def test_a_binary_recipe_is_one_line_with_the_fix(tmp_path):
    for name, data in (("binary.yaml", bytes(range(256))), ("latin1.yaml", "name: café\n".encode("latin-1"))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UserError) as err:
            load_recipe(path)
        line = one_line(err.value)
        assert line.startswith(f"{path}: recipe: not UTF-8 text (byte ") and "fix: pass the recipe YAML file, saved as UTF-8" in line


def test_a_control_character_is_one_line(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_text("name: tiny\x00\n")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert one_line(err.value) == (f"{path}: YAML: not valid YAML (unacceptable character #x0000: special characters are "
                                   "not allowed); fix: fix the YAML syntax")


def _line_of(text: str, pattern: str, nth: int = 1) -> int:
    """1-based number of the nth line matching `pattern`."""
    return [i for i, line in enumerate(text.splitlines(), start=1) if re.match(pattern, line)][nth - 1]


def test_a_key_given_twice_at_the_top_is_refused_with_its_line(tmp_path):
    text = TINY.read_text()
    hidden = yaml.safe_load(text)["model"]["hidden_size"]
    model = re.search(r"^model:\n(?:  .*\n|\n)*", text, re.M).group(0)
    other = model.replace(f"hidden_size: {hidden}", f"hidden_size: {2 * hidden}")  # last one would win, silently
    assert other != model
    twice = text + "\n" + other
    path = tmp_path / "twice.yaml"
    path.write_text(twice)
    with pytest.raises(UserError) as err:
        load_recipe(path)
    first, second = _line_of(twice, r"model:"), _line_of(twice, r"model:", 2)
    assert one_line(err.value) == (f"{path}: line {second}: key 'model' appears twice in one mapping (first at line {first}); "
                                   "YAML would keep only the last one; fix: keep one of the two")


def test_a_key_given_twice_deep_down_is_refused_with_its_line(tmp_path):
    text = TINY.read_text()
    hidden = yaml.safe_load(text)["model"]["hidden_size"]
    twice = re.sub(rf"^(  hidden_size: {hidden}\b.*)$", rf"\1\n  hidden_size: {2 * hidden}", text, count=1, flags=re.M)
    assert twice != text
    path = tmp_path / "twice.yaml"
    path.write_text(twice)
    with pytest.raises(UserError) as err:
        load_recipe(path)
    line = one_line(err.value)
    first, second = _line_of(twice, r"  hidden_size:"), _line_of(twice, r"  hidden_size:", 2)
    assert line.startswith(f"{path}: line {second}: key 'hidden_size' appears twice in one mapping (first at line {first})")

    in_a_list = "a:\n  - x: 1\n    y: 2\n    x: 3\n"
    with pytest.raises(UserError, match=r"line 4: key 'x' appears twice in one mapping \(first at line 2\)"):
        yaml.load(in_a_list, Loader=RecipeLoader)


def test_anchors_aliases_and_merge_keys_still_work(tmp_path):
    text = TINY.read_text()
    assert "&web_shares" in text and "*web_shares" in text
    assert yaml.load(text, Loader=RecipeLoader) == yaml.safe_load(text)

    # a merge key: the mapping's own keys override the merged ones, and that is not a key given twice
    lr_lines = list(re.finditer(r"^(    lr: )(\{.*\})$", text, re.M))
    assert len(lr_lines) >= 2
    second = lr_lines[1]
    merged = (text[:second.start()] + "    lr: {<<: *first_lr, peak: 6.0e-3}" + text[second.end():])
    first = lr_lines[0]
    merged = merged[:first.start()] + f"{first.group(1)}&first_lr {first.group(2)}" + merged[first.end():]
    path = tmp_path / "merged.yaml"
    path.write_text(merged)
    recipe, plain = load_recipe(path), load_recipe(TINY)
    assert recipe.stages[1].lr.peak == 6.0e-3
    assert recipe.stages[1].lr.warmup_steps == plain.stages[0].lr.warmup_steps  # from the merged mapping
    assert recipe.stages[1].mixture["web"].sources == plain.stages[0].mixture["web"].sources  # the alias
    assert yaml.load(merged, Loader=RecipeLoader) == yaml.safe_load(merged)

    nested = "base: &b {a: 1, c: 3}\nmid: &m {<<: *b, a: 2}\ntop: {<<: [*m, *b], d: 4}\n"
    assert yaml.load(nested, Loader=RecipeLoader) == yaml.safe_load(nested)


# ------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def small_hf(tmp_path_factory) -> Path:
    """A random two-layer LLaMA with a 64-token vocabulary, saved as transformers saves it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=32)
    out = tmp_path_factory.mktemp("small") / "hf"
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def _copy(folder: Path, to: Path) -> Path:
    return Path(shutil.copytree(folder, to))


def test_a_whole_checkpoint_passes_the_check(small_hf):
    from smolrecipe.backends.hf_folder import check_hf_folder

    assert check_hf_folder(small_hf) == small_hf


def test_a_truncated_safetensors_file_is_one_line(small_hf, tmp_path):
    from smolrecipe.backends.hf_folder import check_hf_folder

    cut = _copy(small_hf, tmp_path / "cut")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # an interrupted copy
    with pytest.raises(UserError) as err:
        check_hf_folder(cut)
    line = one_line(err.value)
    assert line.startswith(f"{weights}: not a readable safetensors file, truncated or corrupt (") and "copy the checkpoint" in line

    weights.write_bytes(b"\x00" * 3)  # shorter than the header length
    with pytest.raises(UserError, match="not a readable safetensors file"):
        check_hf_folder(cut)


def test_a_garbled_config_is_one_line(small_hf, tmp_path):
    from smolrecipe.backends.hf_folder import check_hf_folder

    folder = _copy(small_hf, tmp_path / "garbled")
    config = folder / "config.json"
    for garbage, problem in ((b"\x89PNG\r\n\x1a\n", "not valid JSON ("), (b'{"hidden_size": 16,', "not valid JSON ("),
                             (b'{"hidden_size": 16}', "names no model_type")):
        config.write_bytes(garbage)
        with pytest.raises(UserError) as err:
            check_hf_folder(folder)
        assert one_line(err.value).startswith(f"{config}: {problem}")


def test_a_missing_shard_of_a_sharded_checkpoint_is_named(small_hf, tmp_path):
    from smolrecipe.backends.hf_folder import check_hf_folder

    folder = _copy(small_hf, tmp_path / "sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError) as err:
        check_hf_folder(folder)
    assert one_line(err.value).startswith(f"{folder / 'model-00002-of-00002.safetensors'}: missing: ")
    (folder / "model-00001-of-00002.safetensors").rename(folder / "elsewhere.bin")
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(UserError, match=r"has no weights \(model.safetensors\)"):
        check_hf_folder(folder)


@pytest.mark.slow
def test_run_eval_on_a_broken_checkpoint_is_one_line_before_any_model_loads(small_hf, tmp_path):
    import os

    cut = _copy(small_hf, tmp_path / "cut")
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:1000])
    garbled = _copy(small_hf, tmp_path / "garbled")
    (garbled / "config.json").write_text('{"model_type": "llama", ')
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for folder, named in ((cut, cut / "model.safetensors"), (garbled, garbled / "config.json")):
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "run_eval.py"), str(folder), "--suite", "quick",
                               "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, env=offline, timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(f"error: {named}: ")
        assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- the tools' ending


def test_run_passes_a_status_through():
    assert cli.run(lambda: 0) == 0
    assert cli.run(lambda: None) == 0
    assert cli.run(lambda: 75) == 75  # preempted: the batch script requeues on it


def test_run_turns_a_user_error_into_one_line_and_status_2(capsys):
    def main():
        print("working")
        raise UserError("model.hidden_size", "is odd", "make it even", source="recipes/mine.yaml")

    assert cli.run(main) == cli.EXIT_USER_ERROR == 2
    captured = capsys.readouterr()
    assert captured.out == "working\n"
    assert captured.err == "error: recipes/mine.yaml: model.hidden_size: is odd; fix: make it even\n"


def test_run_turns_ctrl_c_into_one_line_and_status_130(capsys):
    def main():
        raise KeyboardInterrupt

    assert cli.run(main) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted: nothing half-written is kept; fix: run the same command again to resume\n"
    assert cli.run(main, cli.interrupted("pass --resume")) == 130
    assert capsys.readouterr().err == "interrupted: nothing half-written is kept; fix: pass --resume\n"


def test_other_exceptions_are_not_swallowed():
    def main():
        raise ZeroDivisionError  # a bug of ours keeps its traceback

    with pytest.raises(ZeroDivisionError):
        cli.run(main)
    with pytest.raises(SystemExit):  # argparse's usage errors keep their own message and status
        cli.run(lambda: sys.exit(2))


def test_command_gives_main_its_argv_and_blame_names_the_file(capsys):
    @cli.command(cli.interrupted("run it again"))
    def main(argv=None):
        with cli.blame(argv[0]):
            if argv[1] == "plain":
                raise UserError("--stage", "'x' is not a stage", "use stage1")
            if argv[1] == "sourced":
                raise UserError("model", "bad", "fix it", source="other.yaml")
            raise KeyboardInterrupt

    assert main(["r.yaml", "plain"]) == 2
    assert capsys.readouterr().err == "error: r.yaml: --stage: 'x' is not a stage; fix: use stage1\n"
    assert main(["r.yaml", "sourced"]) == 2
    assert capsys.readouterr().err == "error: other.yaml: model: bad; fix: fix it\n"  # its own file wins
    assert main(["r.yaml", "stop"]) == 130
    assert capsys.readouterr().err == "interrupted: nothing half-written is kept; fix: run it again\n"


def test_ctrl_c_while_a_tool_still_imports_is_the_same_one_line():
    import signal

    script = "import smolrecipe.cli\nraise KeyboardInterrupt  # where a tool's heavy imports would be\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGINT  # Python ends itself with SIGINT: a shell reports 130
    assert done.stderr == "interrupted: nothing half-written is kept; fix: run the same command again to resume\n"
    other = subprocess.run([sys.executable, "-c", "import smolrecipe.cli\n1 / 0\n"], capture_output=True, text=True, timeout=60)
    assert other.returncode == 1 and "ZeroDivisionError" in other.stderr  # a bug keeps its traceback


def test_every_tool_ends_through_cli():
    for path in sorted((ROOT / "tools").glob("*.py")):
        text = path.read_text()
        assert "cli.command(" in text or "cli.run(" in text, f"{path.name} does not end through smolrecipe.cli"
        assert not re.search(r"""print\(f?["'](\[bold red\])?error""", text), f"{path.name} prints its own error line"


def test_a_tool_given_a_bad_recipe_prints_exactly_one_line(tiny_dict, write_recipe, tmp_path):
    tiny_dict["model"]["num_key_value_heads"] = 3
    recipe = write_recipe(tiny_dict)
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train_local.py"), str(recipe), "--stage", "all"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (f"error: {recipe}: model.num_key_value_heads: 3 KV heads do not divide 4 attention heads "
                           "(grouped-query attention needs whole groups); fix: use one of [1, 2, 4]\n")


# ------------------------------------------------------------------------------------------- any working directory


def test_relative_recipe_paths_are_relative_to_the_checkout_from_any_directory(tmp_path, monkeypatch):
    for name in ("SMOLRECIPE_DATA", "SMOLRECIPE_RUNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(TINY)
    resolved = resolve_recipe(recipe)
    fields = path_fields(resolved)
    assert len(fields) >= 6 and all(Path(p).is_absolute() for p in fields.values()), fields
    assert resolved.paths.runs == str(PROJECT_ROOT / "runs")
    assert recipe.tokenizer.path.startswith("${SMOLRECIPE_DATA:-runs/data}/tokenizers/")
    assert resolved.tokenizer.path == str(PROJECT_ROOT / "runs" / "data" / "tokenizers" / Path(recipe.tokenizer.path).name)
    assert resolved.sources["prose"].path == str(PROJECT_ROOT / "runs" / "data" / "corpus" / "prose")
    assert path_fields(recipe)["paths.runs"] == "${SMOLRECIPE_RUNS:-runs}"  # the recipe itself keeps what was written

    monkeypatch.setenv("SMOLRECIPE_DATA", "elsewhere")  # a relative value: the checkout's too
    assert resolve_recipe(recipe).paths.data == str(PROJECT_ROOT / "elsewhere")
    monkeypatch.setenv("SMOLRECIPE_DATA", str(tmp_path / "data"))  # an absolute one stays
    assert resolve_recipe(recipe).paths.data == str(tmp_path / "data")
    assert project_path("/abs/x") == "/abs/x" and project_path("x/y", Path("/r")) == "/r/x/y"


def test_the_demo_corpus_goes_where_the_tiny_recipe_reads_it_from_any_directory(tmp_path, monkeypatch, capsys):
    import make_demo_corpus  # tools/ is on sys.path (conftest.py)

    monkeypatch.delenv("SMOLRECIPE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        make_demo_corpus.main(["--help"])
    default = str(PROJECT_ROOT / "runs" / "data" / "corpus")
    assert default in capsys.readouterr().out.replace("\n", "")
    assert Path(resolve_recipe(load_recipe(TINY)).sources["prose"].path).parent == Path(default)


@pytest.mark.slow
def test_make_config_runs_from_another_directory(tmp_path, monkeypatch):
    from smolrecipe.backends.nanotron.generate import render

    out = tmp_path / "configs"
    # the preflight reads the data folders: not the checkout's runs/data, which another recipe may have prepared
    env = {**os.environ, "SMOLRECIPE_DATA": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "make_config.py"), str(TINY), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    monkeypatch.chdir(ROOT)
    expected = render("recipes/tiny.yaml").files  # as `make configs` writes them: the header names recipes/tiny.yaml
    assert {p.name: p.read_text() for p in out.glob("*.yaml")} == expected
    assert not (tmp_path / "runs").exists()  # nothing relative to the working directory
