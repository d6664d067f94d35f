"""The batches every stage trains on, the same for the nanotron entry point and the local backend.

One data path, written down once (README, "The data path"):

- **Pretraining samples**: each nanoset folder of the stage is opened with datatrove's
  `DatatroveFolderDataset` (files in a shuffled order fixed by the seed, windows of seq+1 tokens,
  positions read from the `.index` file datatrove writes, so a position restarts right after each
  `tokenizer.document_end` token). One epoch of (folder, window) pairs is built by always drawing
  from the folder furthest below its weight (nanotron's `Nanoset` blend), permuted with
  `RandomState(seed)` and tiled for as many epochs as the stage needs: sample i is the i-th
  sequence of the stage.
- **Order across ranks**: nanotron's `MegatronPretrainingSampler`: step s reads samples
  [s*G, (s+1)*G) of that list (G the global batch); data-parallel rank r takes the r-th slice of
  micro-batch size of every block of micro x dp samples. One process (the local backend) reads the
  same samples in order, so a step's gradient averages over the same sequences.
- **Pretraining batch** (what nanotron's `DataCollatorForCLM` makes of samples with positions):
  inputs are tokens[:-1], labels tokens[1:]; the label of a document's first token is masked
  (it is not predicted from the previous document). The LLaMA model class at the pinned commit
  runs positions 0..seq-1 along the packed window and attention crosses documents; the local
  backend feeds its transformers model the same way (no per-document position ids).
- **SFT rows** (nanotron's `process_sft` semantics, right-padded): tokens of
  `prompt + completion + eos`, truncated to seq+1; inputs tokens[:-1], labels tokens[1:], padded on
  the right to the sequence length; `label_mask` on the labels that are completion or eos tokens.
  `input_mask` is all ones: with right padding, causal attention already keeps every real token
  from seeing the padding after it, and nanotron's LLaMA attention at the pinned commit builds
  flash-attn's cu_seqlens from the mask without unpadding the rows, so a partial mask would shift
  every row after the first onto the wrong tokens. Records are read in the order prepared, cycling.

Items are numpy arrays (the engine's collators take numpy); `to_transformers` turns an engine
batch into what a transformers causal LM takes.
"""

from __future__ import annotations

import numpy as np
import torch
from datatrove.utils.dataset import DatatroveFolderDataset
from torch.utils.data import Dataset

from smolrecipe.data.chats import completion_mask
from smolrecipe.data.verify import read_manifest
from smolrecipe.errors import UserError
from smolrecipe.recipe.plan import StagePlan

IGNORE_INDEX = -100  # the label value transformers' losses skip
ENGINE_KEYS = ("input_ids", "input_mask", "label_ids", "label_mask")


def blend_index(lengths: list[int], weights: list[float], n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(folder index, sample index within the folder) for each of `n_samples` training sequences."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    epoch = int(sum(lengths))
    folder = np.empty(epoch, dtype=np.int64)
    sample = np.empty(epoch, dtype=np.int64)
    drawn = np.zeros(len(lengths), dtype=np.int64)
    for i in range(epoch):
        k = int(np.argmax(w * max(i, 1.0) - drawn))  # the folder furthest below its share so far
        folder[i], sample[i] = k, drawn[k] % lengths[k]
        drawn[k] += 1
    # One permutation for both arrays: nanotron shuffles each with a fresh RandomState(seed).
    order = np.random.RandomState(seed).permutation(epoch)
    folder, sample = folder[order], sample[order]
    repeats = n_samples // epoch + 1
    return np.tile(folder, repeats)[:n_samples], np.tile(sample, repeats)[:n_samples]


def open_folder(folder: str, sequence_length: int) -> DatatroveFolderDataset:
    """A published nanoset folder (prepare_data writes the manifest last, so it marks a complete one)."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError("sources", f"{folder} is not a prepared nanoset folder (no manifest.json)",
                          "run `python tools/prepare_data.py RECIPE` first")
    return DatatroveFolderDataset(folder, seq_len=sequence_length, filename_pattern="*.ds", recursive=False,
                                  token_size=manifest["token_size"], shuffle=True, return_positions=True)


class PretrainSamples(Dataset):
    """A pretraining stage's sequences in training order: item i = {input_ids, positions} of seq+1 tokens."""

    def __init__(self, folders: list[str], weights: list[float], n_samples: int, sequence_length: int, seed: int):
        self.folders, self.sequence_length = list(folders), sequence_length
        self.datasets = [open_folder(f, sequence_length) for f in self.folders]
        self.lengths = [len(d) for d in self.datasets]
        for folder, length in zip(self.folders, self.lengths, strict=True):
            if length == 0:
                raise UserError("training.sequence_length", f"{folder} holds fewer than {sequence_length + 1} tokens",
                                  "prepare more data for that source or use a shorter sequence")
        self.folder_index, self.sample_index = blend_index(self.lengths, weights, n_samples, seed)
        self._consumed = 0

    @classmethod
    def for_stage(cls, stage: StagePlan, sequence_length: int, seed: int) -> "PretrainSamples":
        return cls([fw.folder for fw in stage.weights], [fw.weight for fw in stage.weights],
                   stage.train_steps * stage.global_batch, sequence_length, seed)

    def __len__(self) -> int:
        return len(self.folder_index)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        k = int(self.folder_index[i])
        item = self.datasets[k][int(self.sample_index[i]) % self.lengths[k]]
        return {"input_ids": item["input_ids"].numpy().astype(np.int64), "positions": item["positions"].numpy().astype(np.int64)}

    def samples_per_folder(self, end: int | None = None) -> dict[str, int]:
        counts = np.bincount(self.folder_index[:end], minlength=len(self.folders))
        return dict(zip(self.folders, counts.tolist(), strict=True))

    # nanotron's trainer asks its dataset for these after every step (logs, checkpoint metadata).
    def update_consumption_metrics(self, start_idx: int, end_idx: int, sequence_length: int) -> None:
        self._consumed = end_idx

    def get_consumption_stats(self) -> dict[str, dict[str, int]]:
        return {folder: {"tokens": n * self.sequence_length} for folder, n in self.samples_per_folder(self._consumed).items()}


def pretrain_batch(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Samples -> the engine's batch, as nanotron's DataCollatorForCLM builds it from samples with positions."""
    tokens = np.stack([item["input_ids"] for item in items])
    positions = np.stack([item["positions"] for item in items])
    return {"input_ids": tokens[:, :-1], "input_mask": np.ones(tokens[:, :-1].shape, dtype=np.bool_),
            "label_ids": tokens[:, 1:], "label_mask": positions[:, 1:] != 0}


class SFTRows(Dataset):
    """An SFT stage's rows in training order: item i is record i (mod the records), as an engine row."""

    def __init__(self, records, tokenizer, sequence_length: int, n_samples: int):
        if len(records) == 0:
            raise UserError("sft.data", "the prepared SFT records are empty", "run `python tools/prepare_data.py RECIPE --sft`")
        self.records, self.tokenizer, self.sequence_length, self.n_samples = records, tokenizer, sequence_length, n_samples

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        record = self.records[i % len(self.records)]
        ids, on_completion = completion_mask(record["prompt"], record["completion"], self.tokenizer)
        ids, on_completion = ids[: self.sequence_length + 1], on_completion[: self.sequence_length + 1]
        n = len(ids) - 1  # inputs are tokens[:-1]
        row = {key: np.zeros(self.sequence_length, dtype=np.bool_ if "mask" in key else np.int64) for key in ENGINE_KEYS}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        row["input_ids"][:] = pad
        row["label_ids"][:] = pad
        row["input_ids"][:n], row["label_ids"][:n] = ids[:-1], ids[1:]
        row["input_mask"][:] = True  # see the module docstring: padding is after, never attended to
        row["label_mask"][:n] = on_completion[1:]
        return row

    # Asked by nanotron's trainer after every step; per-folder token counts apply to nanosets only.
    def update_consumption_metrics(self, start_idx: int, end_idx: int, sequence_length: int) -> None:
        pass

    def get_consumption_stats(self) -> dict[str, dict[str, int]]:
        return {}


def sft_batch(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([row[key] for row in rows]) for key in ENGINE_KEYS}


def to_transformers(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """An engine batch for a transformers causal LM: labels are already shifted, so they go in as
    `shift_labels` (the loss uses them as they are) and as `labels`, which turns the loss on."""
    labels = torch.from_numpy(np.where(batch["label_mask"], batch["label_ids"], IGNORE_INDEX))
    return {"input_ids": torch.from_numpy(batch["input_ids"]),
            "attention_mask": torch.from_numpy(batch["input_mask"].astype(np.int64)),
            "labels": labels, "shift_labels": labels}


def collate_pretrain(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return to_transformers(pretrain_batch(items))


def collate_sft(rows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """The rows as one batch, cut after the batch's last label: the columns after it are padding in
    every row, which no real token attends to (causal) and no loss counts, so the loss and gradients
    are the engine's; the local backend skips their compute (chats are ~50 of 128 tokens)."""
    batch = sft_batch(rows)
    labelled = batch["label_mask"].any(axis=0).nonzero()[0]
    end = int(labelled[-1]) + 1 if labelled.size else None  # no label at all: keep the rows whole
    return to_transformers({key: value[:, :end] for key, value in batch.items()})
