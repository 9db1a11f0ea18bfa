"""A trained model as the later stages need it: weights + model arguments + tokenizer + config.

Two on-disk forms, both loaded with `torch.load(..., weights_only=True)`:
- a Lightning checkpoint (`runs/.../checkpoints/*.ckpt`), which names the tokenizer it was trained with;
- an export directory (`model.pt` = state_dict + model args, `spm.model`, `config.yaml`): what MLflow stores, so a
  registered model needs nothing from the project's files.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from models.build import build_model
from models.recurrent import RecurrentLM
from pipeline.corpus.tokenizer import Tokenizer


class CheckpointError(ValueError):
    """A checkpoint or exported model cannot be loaded; the message names the file and the fix."""


@dataclass
class ModelBundle:
    model: RecurrentLM
    tokenizer: Tokenizer
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)  # source, data/tokenizer hashes, ...

    @property
    def model_args(self) -> dict[str, Any]:
        return self.meta["model_args"]


def _torch_load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give a checkpoint (runs/*/checkpoints/*.ckpt), an exported "
                              "model directory, an MLflow run id or a models:/NAME@ALIAS URI")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is truncated or corrupted ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]}); use another checkpoint (e.g. best.ckpt or an "
                              "earlier one) or retrain") from None
    except Exception as e:  # the unpickler refuses anything but tensors and plain containers
        raise CheckpointError(f"{path} holds objects that are not plain weights ({type(e).__name__}); only "
                              "checkpoints written by this project can be loaded") from None


def _build_with_weights(path: Path, args: dict[str, Any], state: dict[str, Any]) -> RecurrentLM:
    try:
        model = build_model(args)
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: its weights do not fit its own model arguments ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160]}); the file was edited or written by another "
                              "version: retrain or re-export") from None
    return model.eval()


def load_checkpoint(path: str | Path) -> ModelBundle:
    path = Path(path)
    ckpt = _torch_load(path)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "model_args" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a marathi-nwp training checkpoint (no model arguments); "
                              "pass a checkpoint from runs/*/checkpoints/")
    tok_path = Path(hp["tokenizer_path"])
    if not tok_path.is_file():
        raise CheckpointError(f"{path} was trained with the tokenizer {tok_path}, which is gone; run "
                              "`python -m pipeline prepare` with the run's config.yaml to rebuild it")
    tok = Tokenizer(tok_path)
    if hp.get("tokenizer_sha256") and tok.sha256() != hp["tokenizer_sha256"]:
        raise CheckpointError(f"the tokenizer {tok_path} differs from the one {path} was trained with "
                              "(SHA-256 mismatch); rebuild it with the run's config.yaml")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model = _build_with_weights(path, hp["model_args"], state)
    meta = {"source": str(path), "model_args": hp["model_args"], "data_sha256": hp.get("data_sha256", ""),
            "tokenizer_sha256": hp.get("tokenizer_sha256", ""), "global_step": ckpt.get("global_step")}
    return ModelBundle(model, tok, hp["config"], meta)


def export(bundle: ModelBundle, directory: str | Path) -> Path:
    """Write the self-contained form: `model.pt`, `spm.model`, `config.yaml`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"model_args": bundle.model_args, "state_dict": bundle.model.state_dict(),
                "meta": {k: v for k, v in bundle.meta.items() if isinstance(v, (str, int, float)) or v is None}},
               directory / "model.pt")
    (directory / "spm.model").write_bytes(Path(bundle.tokenizer.model_path).read_bytes())
    (directory / "config.yaml").write_text(yaml.safe_dump(bundle.config, allow_unicode=True, sort_keys=False),
                                           encoding="utf-8")
    return directory


def load_export(directory: str | Path) -> ModelBundle:
    directory = Path(directory)
    blob = _torch_load(directory / "model.pt")
    if "model_args" not in blob or "state_dict" not in blob:
        raise CheckpointError(f"{directory / 'model.pt'} is not an exported marathi-nwp model (no model arguments "
                              "or weights); export one with pipeline.checkpoints.export or pass a training checkpoint")
    if not (directory / "spm.model").is_file():
        raise CheckpointError(f"{directory} has no spm.model next to model.pt; re-export the model")
    model = _build_with_weights(directory / "model.pt", blob["model_args"], blob["state_dict"])
    config = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8")) \
        if (directory / "config.yaml").exists() else {}
    meta = {**blob.get("meta", {}), "source": str(directory), "model_args": blob["model_args"],
            "tokenizer_sha256": hashlib.sha256((directory / "spm.model").read_bytes()).hexdigest()}
    return ModelBundle(model, Tokenizer(directory / "spm.model"), config, meta)


def load_local(ref: str | Path) -> ModelBundle:
    """A checkpoint file or an export directory."""
    p = Path(ref)
    return load_export(p) if p.is_dir() else load_checkpoint(p)
