"""The Lightning data module: the prepared streams as BPTT windows, one contiguous slice per rank under DDP."""
from __future__ import annotations

import pytorch_lightning as pl

from pipeline.corpus.prepare import Prepared
from pipeline.corpus.windows import BPTTWindows, batchify, rank_slice


class CorpusDataModule(pl.LightningDataModule):
    """Contiguous BPTT windows over the prepared streams; nothing is shuffled (the hidden state carries over)."""

    def __init__(self, prepared: Prepared, batch_size: int, eval_batch_size: int, bptt: int,
                 variable_bptt: bool = False, seed: int = 0):
        super().__init__()
        self.prepared = prepared
        self.batch_size, self.eval_batch_size, self.bptt = batch_size, eval_batch_size, bptt
        self.variable_bptt, self.seed = variable_bptt, seed
        self._loaders: dict[str, BPTTWindows] = {}

    def _windows(self, split: str, batch_size: int, variable: bool) -> BPTTWindows:
        if split not in self._loaders:
            rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
            stream = rank_slice(self.prepared.stream(split), rank, world)
            self._loaders[split] = BPTTWindows(batchify(stream, batch_size), self.bptt, variable, self.seed)
        return self._loaders[split]

    def train_dataloader(self) -> BPTTWindows:
        return self._windows("train", self.batch_size, self.variable_bptt)

    def val_dataloader(self) -> BPTTWindows:
        return self._windows("validation", self.eval_batch_size, False)

    def test_dataloader(self) -> BPTTWindows:
        return self._windows("test", self.eval_batch_size, False)
