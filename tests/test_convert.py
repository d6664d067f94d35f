"""nanotron checkpoint <-> transformers conversion (smolrecipe.backends.nanotron.convert, tools/convert.py).

The nanotron layout expected here was read from nanotron's source at the pinned commit
(serialize/weights.py, serialize/utils.py, serialize/metadata.py, trainer.py, models/llama.py);
the tiny tests run in seconds, the SmolLM2-135M round trip is slow-marked.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import convert as convert_cli
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from smolrecipe.backends.nanotron import schema as ns
from smolrecipe.backends.nanotron.convert import (
    NANOTRON_LLAMA_DEFAULTS,
    PLAIN_FILE,
    SHARDED_FILE,
    checkpoint_provenance,
    hf_to_nanotron,
    is_nanotron_checkpoint,
    nanotron_to_hf,
)
from smolrecipe.errors import UserError

LAYER0 = "model/model/decoder/0/pp_block"
EMBEDDING = f"model/model/token_position_embeddings/pp_block/token_embedding/{SHARDED_FILE}"
FINAL_NORM = f"model/model/final_layer_norm/pp_block/{PLAIN_FILE}"
TOKENS = torch.tensor([[1, 5, 9, 17, 33, 2, 40, 7], [3, 3, 8, 21, 44, 12, 6, 1]])


def nt_tensor(path: Path) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as fh:
        return fh.get_tensor("data")


def hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        return {name: fh.get_tensor(name) for name in fh.keys()}


def logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(tokens).logits


def tiny_llama(folder: Path, tie: bool = True) -> Path:
    """A random 2-layer LLaMA, hidden 32, 4 query / 2 KV heads (so q, k and v differ in size)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, rope_theta=5000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # norms start at one: make them distinct so a swapped norm would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory) -> Path:
    """A 47-token word-level tokenizer with a ChatML template and <|im_end|> as eos, built offline in milliseconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system"] + [f"w{i}" for i in range(41)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  unk_token="<unk>", pad_token="<|im_end|>")
    tok.chat_template = "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    folder = tmp_path_factory.mktemp("word_tokenizer")
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_hf, word_tokenizer, root) -> Path:
    """The tiny model as a nanotron checkpoint step folder of the tiny recipe's stage1, with the config.yaml
    and checkpoint_metadata.json nanotron would have written at step 192 (8 samples of 128 tokens a step)."""
    ckpt = hf_to_nanotron(tiny_hf, tmp_path_factory.mktemp("tiny_ckpt") / "192")
    config = yaml.safe_load((root / "configs" / "tiny" / "stage1.yaml").read_text())
    config["general"].update(step=192, consumed_train_samples=1536)
    config["model"]["model_config"] = json.loads((ckpt / "model_config.json").read_text())
    config["tokenizer"]["tokenizer_name_or_path"] = str(word_tokenizer)
    (ckpt / "config.yaml").write_text(yaml.dump(config))  # Config.save_as_yaml: yaml.dump of the serialized config
    (ckpt / "checkpoint_metadata.json").write_text(json.dumps(nanotron_meta(step=192, samples=1536, sequence_length=128),
                                                              indent=2, sort_keys=True))
    return ckpt


def nanotron_meta(step: int, samples: int, sequence_length: int) -> dict:
    """checkpoint_metadata.json as serialize/metadata.py:save_meta writes it."""
    return {"version": "1.5", "tp": 1, "dp": 4, "cp": 1, "custom_metas": None,
            "metas": {"consumed_train_samples": samples, "last_train_step": step,
                      "consumed_tokens_total": samples * sequence_length, "last_stage_idx": 0,
                      "data_stages": [{"name": "stage1", "start_training_step": 1, "consumed_train_samples": samples,
                                       "sequence_length": sequence_length,
                                       "consumed_tokens_per_dataset_folder": {"/data/web": samples * sequence_length}}]}}


@pytest.fixture
def broken(tmp_path, tiny_ckpt) -> Path:
    """A private copy of the tiny checkpoint to damage."""
    return Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt" / "192"))


# ------------------------------------------------------------------------------------------- layout


def test_fused_rows_are_q_k_v_and_gate_up(tiny_hf, tiny_ckpt):
    hf = hf_tensors(tiny_hf)
    for i in range(2):
        layer = tiny_ckpt / f"model/model/decoder/{i}/pp_block"
        attn = [hf[f"model.layers.{i}.self_attn.{p}_proj.weight"] for p in "qkv"]
        assert [t.shape[0] for t in attn] == [32, 16, 16]
        assert torch.equal(nt_tensor(layer / "attn/qkv_proj" / SHARDED_FILE), torch.cat(attn))
        mlp = [hf[f"model.layers.{i}.mlp.{p}_proj.weight"] for p in ("gate", "up")]
        assert torch.equal(nt_tensor(layer / "mlp/gate_up_proj" / SHARDED_FILE), torch.cat(mlp))
        assert torch.equal(nt_tensor(layer / "attn/o_proj" / SHARDED_FILE), hf[f"model.layers.{i}.self_attn.o_proj.weight"])
        assert torch.equal(nt_tensor(layer / "post_attention_layernorm" / PLAIN_FILE),
                           hf[f"model.layers.{i}.post_attention_layernorm.weight"])
    assert torch.equal(nt_tensor(tiny_ckpt / EMBEDDING), hf["model.embed_tokens.weight"])


def test_shard_metadata_is_what_nanotron_writes_at_tp1(tiny_ckpt):
    """serialize/weights.py:save_weights stores TensorMetadata for tensor-parallel parameters (the slices of
    each contiguous chunk, here the whole tensor) and nothing for replicated ones such as norms."""
    with safe_open(str(tiny_ckpt / LAYER0 / "attn/qkv_proj" / SHARDED_FILE), framework="pt") as fh:
        assert fh.metadata() == {
            "version": "1.5", "unsharded_shape": "(64, 32)",
            "local_global_slices_pairs": "0,32,None|None,None,None#0,32,None|None,None,None;"
                                         "32,48,None|None,None,None#32,48,None|None,None,None;"
                                         "48,64,None|None,None,None#48,64,None|None,None,None"}
    with safe_open(str(tiny_ckpt / LAYER0 / "attn/o_proj" / SHARDED_FILE), framework="pt") as fh:
        assert fh.metadata()["local_global_slices_pairs"] == "None,None,None|None,None,None#None,None,None|0,32,None"
    with safe_open(str(tiny_ckpt / LAYER0 / "input_layernorm" / PLAIN_FILE), framework="pt") as fh:
        assert fh.metadata() == {}


def test_model_config_json_is_nanotrons_llama_config(tiny_ckpt):
    cfg = json.loads((tiny_ckpt / "model_config.json").read_text())
    assert list(cfg) == list(ns.LLAMA.fields) == list(NANOTRON_LLAMA_DEFAULTS)
    assert ns._check_section(ns.LLAMA, cfg, "model_config") == []
    assert cfg["is_llama_config"] and cfg["tie_word_embeddings"] and not cfg["rope_interleaved"]
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rope_theta"]) == (4, 2, 5000.0)
    assert is_nanotron_checkpoint(tiny_ckpt) and not is_nanotron_checkpoint(tiny_ckpt.parent)


def test_tiny_round_trip_is_exact_and_keeps_the_recipe(tmp_path, tiny_hf, tiny_ckpt, word_tokenizer):
    out = nanotron_to_hf(tiny_ckpt, tmp_path / "hf")  # tokenizer from config.yaml
    before, after = hf_tensors(tiny_hf), hf_tensors(out)
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(logits(tiny_hf, TOKENS), logits(out, TOKENS))
    card = (out / "README.md").read_text()
    for fact in ("| recipe | tiny |", "| stage | stage1 |", "| step | 192 |", "| tokens seen | 196,608",
                 f"converted from nanotron checkpoint {tiny_ckpt.resolve()}"):
        assert fact.lower() in card.lower(), fact
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    for path in (out / "model.safetensors", tiny_ckpt / EMBEDDING):  # shared outputs, not safetensors' private 0600
        assert path.stat().st_mode & 0o777 == 0o644


def test_untied_round_trip_writes_lm_head(tmp_path, word_tokenizer):
    hf = tiny_llama(tmp_path / "untied", tie=False)
    ckpt = hf_to_nanotron(hf, tmp_path / "ckpt")
    assert (ckpt / "model/model/lm_head/pp_block" / SHARDED_FILE).is_file()
    out = nanotron_to_hf(ckpt, tmp_path / "back", tokenizer=word_tokenizer, dtype="bfloat16")
    before, after = hf_tensors(hf), hf_tensors(out)
    assert "lm_head.weight" in after and all(torch.equal(before[k].bfloat16(), after[k]) for k in before)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


# ------------------------------------------------------------------------------------------- errors


def damage_missing(ckpt):
    (ckpt / LAYER0 / "mlp/down_proj" / SHARDED_FILE).unlink()
    return ["missing shard file", f"{LAYER0}/mlp/down_proj/{SHARDED_FILE}", "copy the whole checkpoint"]


def damage_truncated(ckpt):
    path = ckpt / LAYER0 / "attn/qkv_proj" / SHARDED_FILE
    path.write_bytes(path.read_bytes()[:-100])
    return ["truncated or corrupt", str(path), "copy the checkpoint again"]


def damage_shape(ckpt):
    save_file({"data": torch.zeros(32, 16)}, str(ckpt / "model/model/decoder/1/pp_block/attn/o_proj" / SHARDED_FILE))
    return ["shape (32, 16)", "implies (32, 32)", "model_config.json", "decoder/1/pp_block/attn/o_proj"]


def damage_unknown(ckpt):
    folder = ckpt / LAYER0 / "attn/q_norm"
    folder.mkdir()
    save_file({"data": torch.ones(8)}, str(folder / PLAIN_FILE))
    return ["unknown parameter file", "attn/q_norm", "model_config.json"]


def damage_lm_head_while_tied(ckpt):
    folder = ckpt / "model/model/lm_head/pp_block"
    folder.mkdir(parents=True)
    save_file({"data": torch.zeros(64, 32)}, str(folder / SHARDED_FILE))
    return ["unknown parameter file", "lm_head while tie_word_embeddings is true"]


def damage_tp2(ckpt):
    folder = ckpt / LAYER0 / "attn/qkv_proj"
    for rank in (0, 1):
        shutil.copy(folder / SHARDED_FILE, folder / f"model_weight_pp-rank-0-of-1_tp-rank-{rank}-of-2.safetensors")
    (folder / SHARDED_FILE).unlink()
    return ["tp=2, pp=1", "only tp=1, pp=1", "tp: 1, pp: 1"]


def damage_interleaved(ckpt):
    path = ckpt / "model_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "rope_interleaved": True}))
    return ["rope_interleaved is true", "rope_interleaved: false"]


@pytest.mark.parametrize("damage", [damage_missing, damage_truncated, damage_shape, damage_unknown, damage_lm_head_while_tied,
                                    damage_tp2, damage_interleaved])
def test_bad_checkpoint_stops_before_writing(broken, tmp_path, word_tokenizer, damage):
    expected = damage(broken)
    out = tmp_path / "out" / "hf"
    with pytest.raises(UserError) as err:
        nanotron_to_hf(broken, out, tokenizer=word_tokenizer)
    for text in expected:
        assert text in str(err.value), (text, str(err.value))
    assert "; fix: " in str(err.value)
    assert not (tmp_path / "out").exists()


def test_failed_conversion_leaves_the_previous_output(broken, tmp_path, word_tokenizer):
    damage_truncated(broken)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    with pytest.raises(UserError):
        nanotron_to_hf(broken, out, tokenizer=word_tokenizer)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind
    assert (out / "previous.txt").read_text() == "kept"


def test_tokenizer_is_required(broken, tmp_path):
    (broken / "config.yaml").unlink()
    with pytest.raises(UserError, match=r"no tokenizer given.*; fix: pass --tokenizer DIR"):
        nanotron_to_hf(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint(tmp_path, tiny_hf):
    with pytest.raises(UserError, match="not a nanotron checkpoint"):
        nanotron_to_hf(tiny_hf, tmp_path / "out", tokenizer="x")
    with pytest.raises(UserError, match="would replace the input"):
        hf_to_nanotron(tiny_hf, tiny_hf.parent)


def test_non_llama_hf_folder_is_refused(tmp_path, tiny_hf):
    hf = Path(shutil.copytree(tiny_hf, tmp_path / "gpt2"))
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UserError, match=r"config.json: model_type is 'gpt2', not 'llama'.*; fix: "):
        hf_to_nanotron(hf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hf_with_biases_is_refused(tmp_path, tiny_hf):
    hf = Path(shutil.copytree(tiny_hf, tmp_path / "biased"))
    tensors = hf_tensors(hf)
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"unknown parameter model.layers.0.self_attn.q_proj.bias"):
        hf_to_nanotron(hf, tmp_path / "out")


# ------------------------------------------------------------------------------------------- provenance


def test_provenance_from_what_nanotron_writes(tiny_ckpt, tmp_path):
    assert checkpoint_provenance(tiny_ckpt) == {"recipe": "tiny", "stage": "stage1", "step": 192, "tokens_seen": 196_608}
    assert checkpoint_provenance(tmp_path) == {"recipe": None, "stage": None, "step": None, "tokens_seen": None}
    only_yaml = tmp_path / "64"
    only_yaml.mkdir()
    (only_yaml / "config.yaml").write_text(yaml.dump({"general": {"project": "smolrecipe", "run": "llama500m-sft", "step": 64,
                                                                  "consumed_train_samples": 1024},
                                                      "tokens": {"sequence_length": 1024}}))
    assert checkpoint_provenance(only_yaml) == {"recipe": "llama500m", "stage": "sft", "step": 64, "tokens_seen": 1_048_576}


# ------------------------------------------------------------------------------------------- CLI


def test_cli_help(root):
    done = subprocess.run([sys.executable, str(root / "tools" / "convert.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "nanotron-to-hf" in done.stdout and "hf-to-nanotron" in done.stdout


@pytest.mark.slow
def test_cli_end_to_end(root, tiny_hf, tiny_ckpt, tmp_path):
    """The checkpoints folder (latest.txt) stands for its newest step, as nanotron reads it."""
    (tiny_ckpt.parent / "latest.txt").write_text("192")
    out = tmp_path / "hf"
    done = subprocess.run([sys.executable, str(root / "tools" / "convert.py"), "nanotron-to-hf", str(tiny_ckpt.parent), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("nanotron-to-hf: ") and "recipe tiny, stage stage1, step 192, 196,608 tokens" in line, line
    assert torch.equal(logits(out, TOKENS), logits(tiny_hf, TOKENS))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.apply_chat_template([{"role": "user", "content": "w1"}], tokenize=False) == "<|im_start|> user w1 <|im_end|> "


def test_cli_error_is_one_line_and_exit_2(broken, tmp_path, capsys, word_tokenizer):
    damage_missing(broken)
    assert convert_cli.main(["nanotron-to-hf", str(broken), str(tmp_path / "out"), "--tokenizer", str(word_tokenizer)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar, which ends its line
    assert last.startswith("error: ") and "missing shard file" in last and "Traceback" not in err


# ------------------------------------------------------------------------------------------- SmolLM2-135M


@pytest.fixture(scope="module")
def smollm2_round_trip(smollm2_hf, tmp_path_factory):
    work = tmp_path_factory.mktemp("smollm2_round_trip")
    ckpt = hf_to_nanotron(smollm2_hf, work / "nanotron")
    return ckpt, nanotron_to_hf(ckpt, work / "hf", tokenizer=smollm2_hf)


@pytest.mark.slow
def test_smollm2_round_trip_is_exact(smollm2_hf, smollm2_round_trip):
    _, back = smollm2_round_trip
    before, after = hf_tensors(smollm2_hf), hf_tensors(back)
    assert set(before) == set(after) and len(before) == 30 * 9 + 2
    assert all(torch.equal(before[k], after[k]) for k in before)
    tokens = torch.randint(0, 49152, (2, 24), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(smollm2_hf, tokens), logits(back, tokens))

    from transformers import AutoTokenizer

    chat = [{"role": "user", "content": "What is 2+2?"}]
    original, converted = AutoTokenizer.from_pretrained(str(smollm2_hf)), AutoTokenizer.from_pretrained(str(back))
    assert converted.apply_chat_template(chat, tokenize=False) == original.apply_chat_template(chat, tokenize=False)
    assert converted("hello world")["input_ids"] == original("hello world")["input_ids"]
    generation = json.loads((back / "generation_config.json").read_text())
    assert generation["eos_token_id"] == original.eos_token_id == original.convert_tokens_to_ids("<|im_end|>")
    config = json.loads((back / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == 100000.0 and config["tie_word_embeddings"] is True


@pytest.mark.slow
def test_smollm2_nanotron_layout(smollm2_round_trip):
    ckpt, _ = smollm2_round_trip
    files = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*.safetensors")}
    assert len(files) == 1 + 30 * 6 + 1  # embedding, 6 per layer, final norm; no lm_head (tied)
    for name in ("attn/qkv_proj", "attn/o_proj", "mlp/gate_up_proj", "mlp/down_proj"):
        assert f"{LAYER0}/{name}/{SHARDED_FILE}" in files
    for name in ("input_layernorm", "post_attention_layernorm"):
        assert f"{LAYER0}/{name}/{PLAIN_FILE}" in files
    assert {EMBEDDING, FINAL_NORM} <= files and not (ckpt / "model/model/lm_head").exists()
    assert nt_tensor(ckpt / LAYER0 / "attn/qkv_proj" / SHARDED_FILE).shape == ((9 + 3 + 3) * 64, 576)
    assert nt_tensor(ckpt / LAYER0 / "mlp/gate_up_proj" / SHARDED_FILE).shape == (2 * 1536, 576)
    assert nt_tensor(ckpt / EMBEDDING).shape == (49152, 576)
    cfg = json.loads((ckpt / "model_config.json").read_text())
    assert {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                "num_key_value_heads", "vocab_size", "tie_word_embeddings", "rope_theta", "is_llama_config")} == {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True, "rope_theta": 100000.0, "is_llama_config": True}
    meta = json.loads((ckpt / "checkpoint_metadata.json").read_text())
    assert (meta["version"], meta["tp"], meta["metas"]["last_train_step"], meta["metas"]["data_stages"]) == ("1.5", 1, 0, [])
