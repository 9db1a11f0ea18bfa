"""Truncated-BPTT windows: contiguous rows, in order, resumable mid-epoch, one slice per DDP rank."""
import numpy as np
import pytest
import torch

from pipeline.corpus.windows import BPTTWindows, batchify, rank_slice


def test_stream_too_short_for_the_batch_size():
    from pipeline.corpus.prepare import CorpusError

    with pytest.raises(CorpusError, match=r"token stream \(10 pieces\) is too short for batch_size=8; use a smaller"):
        batchify(np.arange(10), 8)


def test_batchify_columns_are_contiguous():
    rows = batchify(np.arange(26, dtype=np.int32), 3)
    assert rows.shape == (3, 8)
    assert rows.tolist() == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24))]


def test_windows_in_order_targets_shifted():
    rows = batchify(np.arange(60, dtype=np.int32), 2)  # (2, 30)
    w = BPTTWindows(rows, bptt=7)
    seen = list(w)
    assert len(seen) == len(w) == 5
    xs = torch.cat([x for x, _ in seen], 1)
    ys = torch.cat([y for _, y in seen], 1)
    assert torch.equal(xs, rows[:, :29]) and torch.equal(ys, rows[:, 1:30])
    for x, y in seen:
        assert torch.equal(y[:, :-1], x[:, 1:])


def test_variable_bptt_deterministic_by_seed_and_covers_stream():
    rows = batchify(np.arange(4000, dtype=np.int32), 2)
    lengths = lambda seed: [x.size(1) for x, _ in BPTTWindows(rows, 32, variable=True, seed=seed)]
    a, b, c = lengths(1), lengths(1), lengths(2)
    assert a == b and a != c
    assert sum(a) == rows.size(1) - 1 and len(set(a)) > 3
    w = BPTTWindows(rows, 32, variable=True, seed=1)
    first, second = [x.size(1) for x, _ in w], [x.size(1) for x, _ in w]
    assert first != second  # each epoch draws new lengths, still seeded


def test_state_dict_resumes_at_the_right_window():
    rows = batchify(np.arange(200, dtype=np.int32), 2)
    w = BPTTWindows(rows, bptt=10)
    it = iter(w)
    got = [next(it) for _ in range(4)]  # windows 0..3 handed out and trained on (no prefetch for a sized loader)
    state = w.state_dict()
    w2 = BPTTWindows(rows, bptt=10)
    w2.load_state_dict(state)
    assert w2.resumes_mid_epoch
    nxt = next(iter(w2))
    assert torch.equal(nxt[0], rows[:, 40:50]) and not torch.equal(nxt[0], got[3][0])
    assert sum(1 for _ in w2) == len(w)  # the epoch after a resumed one is whole again


def test_windows_resume_with_real_trainer(tmp_path):
    """Lightning prefetches one batch: the checkpoint must point at the first window the model never trained on."""
    import pytorch_lightning as pl

    rows = batchify(np.arange(400, dtype=np.int32) % 97, 2)

    class Rec(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, i):
            self.seen.append(batch[0][0, 0].item())
            return (self.w * batch[0].float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    kw = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              max_epochs=1, default_root_dir=str(tmp_path))
    full = Rec()
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="at-{step}", every_n_train_steps=7,
                                           save_top_k=-1)
    pl.Trainer(**kw, callbacks=[ckpt_cb]).fit(full, train_dataloaders=BPTTWindows(rows, 10))
    assert len(full.seen) == 20
    rest = Rec()
    pl.Trainer(**kw).fit(rest, train_dataloaders=BPTTWindows(rows, 10), ckpt_path=str(tmp_path / "at-step=7.ckpt"))
    assert rest.seen == full.seen[7:]


def test_rank_slices_contiguous_and_disjoint():
    stream = np.arange(103)
    a, b = rank_slice(stream, 0, 2), rank_slice(stream, 1, 2)
    assert a.tolist() == list(range(0, 51)) and b.tolist() == list(range(51, 102))
    three = [rank_slice(stream, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(three), stream[:102])
