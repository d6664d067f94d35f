"""The local backend's pretraining data: the nanoset folders a stage's nanotron config names,
read with datatrove's DatatroveFolderDataset and blended the way nanotron's Nanoset blends them.

nanotron (data/nanoset.py at the pinned commit) opens each folder with shuffled file order and
`return_positions`, builds one epoch of (folder, sample) pairs by always drawing from the folder
furthest below its weight, permutes that epoch with `RandomState(seed)`, repeats it for as many
epochs as the stage needs, and reads sample i for the i-th sequence of training (one data-parallel
rank). Its collator feeds tokens[:-1] with their positions, and masks the label of every token
that starts a new document. We build the same index and the same batches, so a local run sees the
sequences a one-GPU nanotron run would, in the same order.
"""

from __future__ import annotations

import numpy as np
import torch
from datatrove.utils.dataset import DatatroveFolderDataset
from torch.utils.data import Dataset

from smolrecipe.data_pipeline import read_manifest
from smolrecipe.errors import RecipeError
from smolrecipe.plan import StagePlan

IGNORE_INDEX = -100  # the label value transformers' losses skip


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
        raise RecipeError("sources", f"{folder} is not a prepared nanoset folder (no manifest.json)",
                          "run `python tools/prepare_data.py RECIPE` first")
    return DatatroveFolderDataset(folder, seq_len=sequence_length, filename_pattern="*.ds", recursive=False,
                                  token_size=manifest["token_size"], shuffle=True, return_positions=True)


class StageNanoset(Dataset):
    """The stage's training sequences, in training order: one item per sequence."""

    def __init__(self, stage: StagePlan, sequence_length: int, seed: int):
        self.folders = [fw.folder for fw in stage.weights]
        self.datasets = [open_folder(f, sequence_length) for f in self.folders]
        self.lengths = [len(d) for d in self.datasets]
        for folder, length in zip(self.folders, self.lengths, strict=True):
            if length == 0:
                raise RecipeError("training.sequence_length", f"{folder} holds fewer than {sequence_length + 1} tokens",
                                  "prepare more data for that source or use a shorter sequence")
        n_samples = stage.train_steps * stage.global_batch
        self.folder_index, self.sample_index = blend_index(
            self.lengths, [fw.weight for fw in stage.weights], n_samples, seed)

    def __len__(self) -> int:
        return len(self.folder_index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = int(self.folder_index[i])
        item = self.datasets[k][int(self.sample_index[i]) % self.lengths[k]]
        tokens, positions = item["input_ids"], item["positions"].long()
        labels = tokens[1:].clone()
        labels[positions[1:] == 0] = IGNORE_INDEX  # do not predict a document's first token from the last one
        # position_ids restart at each document; transformers then masks attention across documents.
        return {"input_ids": tokens[:-1], "position_ids": positions[:-1], "labels": labels}

    def samples_per_folder(self) -> dict[str, int]:
        counts = np.bincount(self.folder_index, minlength=len(self.folders))
        return dict(zip(self.folders, counts.tolist(), strict=True))


def collate_pretrain(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack fixed-length sequences. Labels are already shifted, so they go in as `shift_labels`
    (transformers' causal-LM loss then uses them as they are) and as `labels`, which only turns
    the loss on and lets the Trainer count the label tokens of the whole accumulated batch."""
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    batch["shift_labels"] = batch["labels"]
    return batch
