"""Loading checkpoints and exports: every way a file can be wrong gets a CheckpointError naming it and the fix."""
import shutil

import pytest
import torch

from pipeline.checkpoints import CheckpointError, export, load_checkpoint, load_export


def _edited_checkpoint(src, dst, edit):
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


def test_missing_checkpoint_names_what_can_be_given(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist; give a checkpoint .* models:/NAME@ALIAS"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_foreign_torch_file_is_not_a_training_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match=r"foreign.ckpt is not a marathi-nwp training checkpoint"):
        load_checkpoint(tmp_path / "foreign.ckpt")


def test_tokenizer_gone_or_changed(trained_checkpoint, tmp_path):
    def gone(ckpt):
        ckpt["hyper_parameters"]["tokenizer_path"] = str(tmp_path / "missing" / "spm.model")

    def changed(ckpt):
        ckpt["hyper_parameters"]["tokenizer_sha256"] = "0" * 64

    with pytest.raises(CheckpointError, match=r"which is gone; run `python -m pipeline prepare`"):
        load_checkpoint(_edited_checkpoint(trained_checkpoint, tmp_path / "gone.ckpt", gone))
    with pytest.raises(CheckpointError, match=r"differs from the one .* \(SHA-256 mismatch\)"):
        load_checkpoint(_edited_checkpoint(trained_checkpoint, tmp_path / "changed.ckpt", changed))


def test_weights_that_do_not_fit_the_model_arguments(trained_checkpoint, tmp_path):
    def wider(ckpt):
        ckpt["hyper_parameters"]["model_args"] = {**ckpt["hyper_parameters"]["model_args"], "hidden_dim": 48}

    with pytest.raises(CheckpointError, match=r"weights do not fit its own model arguments"):
        load_checkpoint(_edited_checkpoint(trained_checkpoint, tmp_path / "wider.ckpt", wider))


def test_export_round_trip_and_bad_exports(trained_checkpoint, tmp_path):
    bundle = load_checkpoint(trained_checkpoint)
    good = export(bundle, tmp_path / "good")
    again = load_export(good)
    x = torch.randint(0, bundle.tokenizer.vocab_size, (1, 7))
    assert torch.equal(again.model(x)[0], bundle.model(x)[0])

    no_tok = shutil.copytree(good, tmp_path / "no_tok")
    (no_tok / "spm.model").unlink()
    with pytest.raises(CheckpointError, match=r"has no spm.model next to model.pt; re-export"):
        load_export(no_tok)

    not_export = shutil.copytree(good, tmp_path / "not_export")
    torch.save({"something": 1}, not_export / "model.pt")
    with pytest.raises(CheckpointError, match=r"is not an exported marathi-nwp model"):
        load_export(not_export)
