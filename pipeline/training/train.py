"""Training (DESIGN §6): a LightningModule with carried hidden state, truncated BPTT and the Trainer's own clipping.

The module keeps `self.state` between consecutive windows and detaches it after every step (Lightning 2 has no
built-in TBPTT); the state is reset at each epoch start and travels in checkpoints, so a resumed run continues
exactly where the killed one stopped.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from pytorch_lightning.plugins import TorchCheckpointIO

from models.build import build_model, model_args
from models.recurrent import State, detach_state
from pipeline.config import Config, ConfigError
from pipeline.corpus.prepare import Prepared
from pipeline.training.datamodule import CorpusDataModule


class DivergenceError(RuntimeError):
    """The loss became NaN/inf and the config did not ask to record a blow-up."""


class LanguageModelModule(pl.LightningModule):
    def __init__(self, model_args: dict[str, Any], config: dict[str, Any], data_sha256: str = "",
                 tokenizer_sha256: str = "", tokenizer_path: str = ""):
        super().__init__()
        # Plain dicts only: the checkpoint then loads with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.model = build_model(model_args)
        self.train_cfg = config["train"]
        self.state: State | None = None
        self.val_state: State | None = None
        self._val_sum = self._val_count = 0.0
        self._clipped = self._steps = 0
        self._last_loss = math.nan
        self._last_grad_norm = math.nan
        self.grad_norms: list[tuple[int, float]] = []  # (step, pre-clip norm) not yet handed to the logger
        # this step's metrics for the logger, and the step they belong to: StepMetrics writes them (see there)
        self.step_metrics: dict[str, torch.Tensor | float] = {}
        self.metrics_step = 0
        # set here too: Lightning skips on_train_epoch_start when it resumes mid-epoch from a checkpoint
        self._t_start, self._tokens = time.perf_counter(), 0
        self.diverged_at: int | None = None

    # ------------------------------------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        # Keep the state only when a checkpoint restored it mid-epoch; a new epoch starts from zeros.
        if not getattr(self.trainer.train_dataloader, "resumes_mid_epoch", False):
            self.state = None
        self._t_start, self._tokens = time.perf_counter(), 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch  # (B, T), (B, T)
        # this batch's metrics, under the step Lightning numbers its points with
        self.metrics_step, self.step_metrics = self.global_step, {}
        if self.state is None or self._state_batch(self.state) != x.size(0):
            self.state = self.model.init_state(x.size(0), x.device)
        features, state = self.model(x, self.state)
        loss = self.model.loss(features, y)
        self.state = detach_state(state)  # truncated BPTT: the next window sees values, not the graph
        if not torch.isfinite(loss):
            return self._diverged(loss)
        self._last_loss = loss.detach()
        self._tokens += y.numel()
        self._log_step("train/loss", loss, prog_bar=True)
        return loss

    def _log_step(self, name: str, value: torch.Tensor | float, prog_bar: bool = False) -> None:
        """A training metric of this step: Lightning shows it (progress bar, callback_metrics); StepMetrics writes it
        to the logger, before the step's checkpoint."""
        self.log(name, value, on_step=True, on_epoch=False, prog_bar=prog_bar, logger=False)
        self.step_metrics[name] = value.detach() if isinstance(value, torch.Tensor) else value

    @staticmethod
    def _state_batch(state: State) -> int:
        return (state[0] if isinstance(state, tuple) else state).size(1)

    def _diverged(self, loss: torch.Tensor):
        step = self.global_step
        if self.train_cfg["allow_divergence"]:
            self.diverged_at = step
            self._log_step("train/diverged_step", float(step))
            self.trainer.should_stop = True
            return None  # Lightning skips the optimizer step
        raise DivergenceError(
            f"the training loss became {loss.item()} at step {step} (last finite loss {float(self._last_loss):.4f}, "
            f"last pre-clip gradient norm {float(self._last_grad_norm):.4g}); set train.gradient_clip_val "
            f"(e.g. 0.25) or lower train.lr (now {self.train_cfg['lr']}); to record a blow-up on purpose set "
            "train.allow_divergence: true")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # The norm that decides the clip is the one recorded: clip_grad_norm_ returns the total norm before clipping.
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            norm = torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
        else:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            if gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self._last_grad_norm = norm.detach()
        self._steps += 1
        if gradient_clip_val:
            self._clipped += int(norm > gradient_clip_val)
        self.grad_norms.append((self.global_step, float(norm)))  # every step; StepMetrics writes them out
        self._log_step("train/clipped_share", self._clipped / self._steps)

    def log_throughput(self) -> None:
        """train/tokens_per_s since the epoch (or the resumed run) started; StepMetrics calls it at the end of each
        batch, before it writes the step (this module's own on_train_batch_end would run after the checkpoint)."""
        elapsed = time.perf_counter() - self._t_start
        if elapsed > 0:
            self._log_step("train/tokens_per_s", self._tokens / elapsed, prog_bar=True)

    # ---------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self.val_state = None
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        features, self.val_state = self.model(x, self.val_state)
        loss = self.model.loss(features, y)
        self._val_sum += float(loss) * y.numel()  # token-weighted, never a mean of per-batch perplexities
        self._val_count += y.numel()

    def on_validation_epoch_end(self) -> None:
        total = torch.tensor([self._val_sum, self._val_count], dtype=torch.float64, device=self.device)
        total = self.trainer.strategy.reduce(total, reduce_op="sum") if self.trainer.world_size > 1 else total
        loss = (total[0] / total[1].clamp(min=1)).float()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss), sync_dist=False)

    # ---------------------------------------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        tc = self.train_cfg
        params = self.model.parameters()
        if tc["optimizer"] == "sgd":
            opt = torch.optim.SGD(params, lr=tc["lr"], momentum=tc["momentum"], weight_decay=tc["weight_decay"])
        elif tc["optimizer"] == "adam":
            opt = torch.optim.Adam(params, lr=tc["lr"], weight_decay=tc["weight_decay"])
        else:
            opt = torch.optim.AdamW(params, lr=tc["lr"], weight_decay=tc["weight_decay"])
        if tc["schedule"] == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}
        warm = tc["warmup_steps"]
        cosine = tc["schedule"] == "cosine"
        total: list[int] = []

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if not cosine or step == warm:
                return 1.0
            # Asked lazily, once training runs: `estimated_stepping_batches` builds the train loader, and doing that
            # here (before Lightning restores a checkpoint's loop state) would make a resumed run skip loading the
            # loader's position and restart the epoch from its first window.
            if not total:
                total.append(max(1, int(self.trainer.estimated_stepping_batches)))
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total[0] - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Exact resume needs the carried state, dropout's RNG and the clip counters, not only the weights.
        checkpoint["carried_state"] = None if self.state is None else (
            list(self.state) if isinstance(self.state, tuple) else self.state)
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        checkpoint["clip_counts"] = [self._clipped, self._steps]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        carried = checkpoint.get("carried_state")
        self.state = tuple(carried) if isinstance(carried, list) else carried
        if "torch_rng_state" in checkpoint:
            self._rng_to_restore = checkpoint["torch_rng_state"]
        self._clipped, self._steps = checkpoint.get("clip_counts", [0, 0])

    def on_train_start(self) -> None:
        self._t_start, self._tokens = time.perf_counter(), 0
        # Lightning re-seeds after loading the checkpoint; restore dropout's RNG here, just before the first step.
        rng = getattr(self, "_rng_to_restore", None)
        if rng is not None:
            torch.set_rng_state(rng)
            self._rng_to_restore = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint under a temporary name and rename it into place: a run killed while saving (SIGKILL,
    power loss) leaves the previous last.ckpt intact instead of a truncated file that the next run would resume from.

    The last.ckpt being replaced is kept as previous.ckpt (hard link, then rename: at every instant both names hold
    a complete file), so a last.ckpt damaged on disk later still leaves a good checkpoint to resume from."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if path.name == LAST and path.is_file():
            keep = path.with_name(f".{PREVIOUS}.tmp-{os.getpid()}")
            keep.unlink(missing_ok=True)
            os.link(path, keep)
            os.replace(keep, path.with_name(PREVIOUS))
        os.replace(tmp, path)


LAST, PREVIOUS = "last.ckpt", "previous.ckpt"


def resume_checkpoint(ckpt_dir: Path, log=print) -> Path | None:
    """The newest checkpoint that loads: last.ckpt, else previous.ckpt. A damaged one (truncated, bit rot) is
    renamed `*.corrupt` with a message, so it is neither resumed from nor rotated into previous.ckpt later."""
    from pipeline.checkpoints import CheckpointError, _torch_load

    for name in (LAST, PREVIOUS):
        path = ckpt_dir / name
        if not path.is_file():
            continue
        try:
            ckpt = _torch_load(path)
            if "state_dict" not in ckpt or "loops" not in ckpt:
                raise CheckpointError(f"{path} is not a training checkpoint (no loop state)")
            return path
        except CheckpointError as e:
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            log(f"warning: cannot resume from {path}: {e}; moved it to {bad.name} and trying the previous checkpoint")
    return None


class StepMetrics(Callback):
    """Writes each training step's metrics to the logger at the end of the step, before the step's checkpoint.

    Lightning writes `self.log` values only after every on_train_batch_end hook has run, and ModelCheckpoint saves
    the periodic checkpoint in its on_train_batch_end (Lightning runs checkpoint callbacks last): a run killed between
    the two lost that step's points for good, since the resumed run redoes only the steps after the checkpoint
    (`make stress`: step 62 gone after a kill at 63). So the module logs with logger=False and this callback writes
    the step (train/loss, train/clipped_share, train/tokens_per_s and Lightning's `epoch`) on the steps Lightning
    would, synchronously: whatever a checkpoint covers is in the tracking store before the checkpoint file is.

    It also writes `train/grad_norm` at every step, not only every log_every_n_steps: the module records each pre-clip
    norm and they go out in one batch with the step's metrics, and before any checkpoint. It is the first writer of a
    step, so after a resume the first point a logger sees is the first step redone."""

    def _write_grad_norms(self, trainer, pl_module) -> None:
        pairs, pl_module.grad_norms = pl_module.grad_norms, []
        for logger in trainer.loggers if pairs else ():
            write = getattr(logger, "log_metric_steps", None)
            if write is not None:
                write("train/grad_norm", pairs)
            else:
                for step, value in pairs:
                    logger.log_metrics({"train/grad_norm": value}, step=step)

    def _write(self, trainer, pl_module) -> None:
        self._write_grad_norms(trainer, pl_module)
        metrics, pl_module.step_metrics = pl_module.step_metrics, {}
        if metrics:
            values = {k: float(v) for k, v in metrics.items()} | {"epoch": trainer.current_epoch}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=pl_module.metrics_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log_throughput()
        # Lightning's rule for a step's points: every log_every_n_steps optimizer steps, and the step training stops at
        stepped = trainer.global_step > pl_module.metrics_step  # not a batch that only accumulates gradients
        if (stepped and trainer.global_step % trainer.log_every_n_steps == 0) or trainer.should_stop:
            self._write(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._write_grad_norms(trainer, pl_module)  # every step has one: those the checkpoint covers go first

    def on_train_end(self, trainer, pl_module) -> None:
        # stopped after this callback's turn (max_time's Timer runs after it, early stopping after validation): the
        # step it stopped at is written, as Lightning writes the step it stops at
        if trainer.should_stop:
            self._write(trainer, pl_module)
        self._write_grad_norms(trainer, pl_module)


class RunSummary(Callback):
    """Keeps what the caller reports at the end: training time and throughput."""

    def __init__(self):
        self.seconds = 0.0
        self.tokens = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.tokens += batch[1].numel()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self._t0


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: str
    last_checkpoint: str
    best_val_loss: float
    diverged_at: int | None
    seconds: float
    tokens: int
    resumed_from: str | None


def run_dir_for(cfg: Config) -> Path:
    """One directory per (config name, everything that changes the weights): equal hash, same run to resume."""
    return Path(cfg.train.runs_dir) / f"{cfg.name}-{cfg.model.cell}-{cfg.hash('data', 'tokenizer', 'model', 'train')}"


def _unless_whole(value: float | int) -> float | int | None:
    """None for 1.0 (a whole epoch, all batches): Lightning's default, the same limit, which it does not announce as
    it does an explicit 1.0 ("`Trainer(limit_val_batches=1.0)` was configured so 100% of the batches will be used..").
    An int 1 means one batch and is passed on."""
    return None if isinstance(value, float) and value == 1.0 else value


def make_trainer(cfg: Config, run_dir: Path, logger=None, extra_callbacks=()) -> pl.Trainer:
    tc = cfg.train
    ckpt_dir = run_dir / "checkpoints"
    last = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=tc.checkpoint_every_n_steps)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1)
    callbacks = [last, best, RunSummary(), StepMetrics(), *extra_callbacks]
    if tc.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor="val/loss", patience=tc.early_stopping_patience, check_finite=False,
                                       check_on_train_epoch_end=False))
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    kwargs: dict[str, Any] = dict(
        max_epochs=tc.max_epochs, max_steps=tc.max_steps, gradient_clip_val=tc.gradient_clip_val,
        gradient_clip_algorithm=tc.gradient_clip_algorithm, val_check_interval=_unless_whole(tc.val_check_interval),
        limit_val_batches=_unless_whole(tc.limit_val_batches), log_every_n_steps=tc.log_every_n_steps,
        accelerator="cpu", devices=1, logger=logger if logger is not None else False,
        callbacks=callbacks, default_root_dir=str(run_dir), use_distributed_sampler=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=False, plugins=[AtomicCheckpointIO()],
    )
    if isinstance(tc.val_check_interval, float) and tc.val_check_interval > 1:
        # every N windows counted over the whole run, not restarted each epoch: a run shorter or longer than an
        # epoch validates at the same step counts (the experiment's checkpoints every fixed number of pieces)
        kwargs.update(val_check_interval=int(tc.val_check_interval), check_val_every_n_epoch=None)
    if tc.max_time_minutes:
        kwargs["max_time"] = {"minutes": tc.max_time_minutes}
    kwargs.update(tc.trainer)  # the user's Trainer flags win: accelerator, devices, strategy, precision, ...
    return pl.Trainer(**kwargs)


def train(cfg: Config, prepared: Prepared, logger=None, fresh: bool = False, log=print,
          extra_callbacks=()) -> TrainResult:
    """Train (or resume) the configured model on the prepared corpus."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    last = run_dir / "checkpoints" / LAST
    resume = None
    if not fresh and (found := resume_checkpoint(run_dir / "checkpoints", log)) is not None:
        resume = str(found)
        log(f"resuming from {found} (same config hash; pass --fresh to start over)")
    elif not fresh and any((run_dir / "checkpoints").glob("*.corrupt")):
        log("warning: no loadable checkpoint is left; training starts over")
    elif fresh and (run_dir / "checkpoints").exists():
        for p in (run_dir / "checkpoints").glob("*.ckpt"):
            p.unlink()
    dc = cfg.data
    datamodule = CorpusDataModule(prepared, dc.batch_size, dc.eval_batch_size, dc.bptt, dc.variable_bptt,
                                  seed=cfg.train.seed)
    vci = cfg.train.val_check_interval
    if vci > 1 and cfg.train.limit_val_batches != 0:  # above 1 it counts windows, not a fraction of an epoch
        per_epoch = len(datamodule.train_dataloader())
        if vci > per_epoch:  # Lightning refuses this only once fit has started, in its own terms
            raise ConfigError(f"train.val_check_interval={vci:g} is more than the {per_epoch} training windows in one "
                              f"epoch (batch_size {dc.batch_size} × bptt {dc.bptt}); set it to at most {per_epoch} or "
                              "to a fraction of an epoch such as 0.5")
    module = LanguageModelModule(model_args(cfg.model, prepared.manifest["tokenizer"]["vocab_size"]), cfg.to_dict(),
                                 prepared.data_sha256, prepared.tokenizer_sha256, str(prepared.tokenizer_path))
    if cfg.model.output == "adaptive":
        counts = torch.bincount(torch.from_numpy(prepared.stream("train").astype("int64")),
                                minlength=module.model.vocab_size)
        module.model.set_piece_frequencies(counts)
    trainer = make_trainer(cfg, run_dir, logger, extra_callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
    # The periodic checkpoint misses the steps after the last multiple of checkpoint_every_n_steps: last.ckpt must
    # hold the weights training ended with (what a finished run is compared, evaluated and resumed by).
    trainer.save_checkpoint(last, weights_only=False)  # the whole training state: resumable, like the periodic ones
    summary = next(c for c in trainer.callbacks if isinstance(c, RunSummary))
    best_cb = next(c for c in trainer.checkpoint_callbacks if c.monitor == "val/loss")
    best_score = best_cb.best_model_score
    return TrainResult(
        run_dir=run_dir, best_checkpoint=best_cb.best_model_path or str(last), last_checkpoint=str(last),
        best_val_loss=float(best_score) if best_score is not None else math.nan,
        diverged_at=module.diverged_at, seconds=summary.seconds, tokens=summary.tokens, resumed_from=resume)
