"""Truncated-BPTT windows over a prepared token stream (DESIGN §4): contiguous rows, read left to right, so the
hidden state carried from one window to the next is the state after the text just before it."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from pipeline.corpus.prepare import CorpusError


def batchify(stream: np.ndarray, batch_size: int) -> torch.Tensor:
    """ids (N,) -> columns (B, N // B): each row is one contiguous stretch of the stream, read left to right.

        stream  a b c d e f g h i j k l        B = 3 rows, N // B = 4 columns; the tail that does not fit is cut
        rows    a b c d | e f g h | i j k l    window t: x = rows[:, t:t+T], y = rows[:, t+1:t+T+1]
    """
    n = len(stream) // batch_size
    if n < 2:
        raise CorpusError(f"the token stream ({len(stream)} pieces) is too short for batch_size={batch_size}; "
                          "use a smaller data.batch_size or a larger corpus")
    return torch.from_numpy(np.asarray(stream[: n * batch_size], dtype=np.int64)).view(batch_size, n)


def rank_slice(stream: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Under DDP each rank reads its own contiguous slice of the stream, so carried state stays meaningful."""
    n = len(stream) // world_size
    return stream[rank * n:(rank + 1) * n]


class BPTTWindows:
    """Yields `(x, y)` windows (B, T) in stream order; resumable mid-epoch through `state_dict`.

    Lightning treats an iterable with `state_dict`/`load_state_dict` as stateful and stores its state in every
    checkpoint, so a run killed mid-epoch restarts at the next unseen window instead of the epoch's start.
    """

    # Windows handed out but not yet trained on when a checkpoint is written. Lightning prefetches one batch only
    # for loaders without a length (to know the last batch); this one has `__len__`, so its fetcher does not
    # prefetch (pytorch_lightning/loops/fetchers.py) and every window handed out has been trained on.
    # tests/pipeline/corpus/test_windows.py::test_windows_resume_with_real_trainer checks this against a real Trainer.
    PREFETCHED = 0

    def __init__(self, rows: torch.Tensor, bptt: int, variable: bool = False, seed: int = 0):
        self.rows, self.bptt, self.variable, self.seed = rows, bptt, variable, seed
        self.epoch = 0
        self._start = 0
        self._ends: list[int] = []

    def _lengths(self) -> Iterator[tuple[int, int]]:
        # AWD-LSTM's variable length: bptt with p=0.95 else bptt/2, jittered by N(0, 5); seeded per epoch
        gen = np.random.default_rng([self.seed, self.epoch])
        pos, n = 0, self.rows.size(1) - 1
        while pos < n:
            t = self.bptt
            if self.variable:
                base = self.bptt if gen.random() < 0.95 else self.bptt / 2
                t = max(2, int(round(gen.normal(base, 5))))
            t = min(t, n - pos)
            yield pos, t
            pos += t

    def __len__(self) -> int:
        return sum(1 for _ in self._lengths())

    @property
    def resumes_mid_epoch(self) -> bool:
        return self._start > 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start, self._start = self._start, 0
        self._ends = [start]
        for pos, t in self._lengths():
            if pos < start:
                continue
            self._ends = (self._ends + [pos + t])[-(self.PREFETCHED + 1):]
            yield self.rows[:, pos:pos + t], self.rows[:, pos + 1:pos + 1 + t]
        self._ends = [0]
        self.epoch += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self._ends[0] if self._ends else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self._start = state["epoch"], state["position"]


