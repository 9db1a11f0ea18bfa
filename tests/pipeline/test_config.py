"""YAML -> typed config: unknown keys, wrong types and out-of-range values name the file, key and allowed values."""
import dataclasses
import subprocess
import sys

import pytest

from pipeline.config import PROJECT_ROOT, ConfigError, load_config


def test_default_config_loads_and_overrides_apply():
    cfg = load_config(PROJECT_ROOT / "configs" / "default.yaml", ["model.cell=gru", "train.max_epochs=2"])
    assert cfg.name == "default" and cfg.model.cell == "gru" and cfg.train.max_epochs == 2
    assert cfg.hash() != load_config(PROJECT_ROOT / "configs" / "default.yaml").hash()


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  celll: lstm\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "model.celll" in msg and "cell" in msg


def test_unknown_section(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("modle:\n  cell: lstm\n")
    with pytest.raises(ConfigError, match="unknown section 'modle'"):
        load_config(p)


def test_wrong_type_and_literal():
    with pytest.raises(ConfigError, match=r"train.lr.*expected float"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"model.cell.*one of 'rnn_tanh'"):
        load_config(None, ["model.cell=transformer"])
    with pytest.raises(ConfigError, match=r"data.batch_size.*expected int"):
        load_config(None, ["data.batch_size=true"])


def test_out_of_range_and_cross_checks():
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size.*out of range"):
        load_config(None, ["tokenizer.vocab_size=3"])
    with pytest.raises(ConfigError, match="IRNN"):
        load_config(None, ["model.init=identity", "model.cell=lstm"])
    with pytest.raises(ConfigError, match="cutoffs"):
        load_config(None, ["model.output=adaptive"])
    with pytest.raises(ConfigError, match=r"model.gate_bias=1.0 sets the LSTM forget gate .* use lstm or gru"):
        load_config(None, ["model.gate_bias=1", "model.cell=rnn_tanh"])
    assert load_config(None, ["model.gate_bias=1", "model.cell=gru"]).model.gate_bias == 1.0


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_the_first_n_documents_knob_is_gone_with_a_pointer_to_its_replacement():
    with pytest.raises(ConfigError, match=r"eval.max_documents' was replaced: use eval.max_words"):
        load_config(None, ["eval.max_documents=400"])
    assert load_config(None, ["eval.max_words=5000"]).eval.max_words == 5000


def test_the_long_range_share_is_now_a_fixed_reserve():
    with pytest.raises(ConfigError, match=r"experiment.longrange_share' was replaced: use experiment.longrange_minutes"):
        load_config(None, ["experiment.longrange_share=0.1"])
    with pytest.raises(ConfigError, match=r"experiment.longrange_cells \[\] must name at least one cell"):
        load_config(None, ["experiment.longrange_cells=[]"])
    with pytest.raises(ConfigError, match=r"experiment.longrange_cells'\[0\]: got 'transformer'.*expected one of 'rnn_tanh'"):
        load_config(None, ["experiment.longrange_cells=[transformer]"])
    with pytest.raises(ConfigError, match=r"experiment.longrange_distances \[1, 5\] must be non-empty and each >= 2"):
        load_config(None, ["experiment.longrange_distances=[1, 5]"])
    for key in ("longrange_steps", "longrange_seeds", "longrange_workers"):
        with pytest.raises(ConfigError, match=f"experiment.{key}' = 0 is out of range"):
            load_config(None, [f"experiment.{key}=0"])


def test_paths_are_resolved_once_when_the_config_is_loaded(tmp_path, monkeypatch):
    from pipeline.config import PATH_FIELDS

    monkeypatch.chdir(tmp_path)  # somewhere else: the shipped config still finds the project's files
    cfg = load_config(PROJECT_ROOT / "configs" / "default.yaml")
    for section, key in PATH_FIELDS:
        value = getattr(getattr(cfg, section), key)
        assert value is None or value.startswith("/"), (section, key, value)
    assert cfg.data.train == str(PROJECT_ROOT / "data" / "corpus" / "train.jsonl")
    # a relative path that exists in the current directory means that file
    (tmp_path / "mine.jsonl").write_text('{"text": "मी घरी गेलो"}\n', encoding="utf-8")
    assert load_config(None, ["data.train=mine.jsonl"]).data.train == str(tmp_path / "mine.jsonl")
    # the run's hash does not depend on how (or from where) a path was spelled
    assert load_config(None, ["train.runs_dir=runs"]).hash() == \
        load_config(None, [f"train.runs_dir={PROJECT_ROOT / 'runs'}"]).hash()
    assert load_config(None, ["train.runs_dir=runs"]).hash() != load_config(None, ["train.runs_dir=elsewhere"]).hash()


def test_mixture_grids_must_be_usable():
    with pytest.raises(ConfigError, match=r"mixture.thetas \[\] must be non-empty and >= 0, mixture.windows"):
        load_config(None, ["mixture.thetas=[]"])
    with pytest.raises(ConfigError, match=r"mixture.windows \[0\] non-empty and >= 1"):
        load_config(None, ["mixture.windows=[0]"])
    assert load_config(None, ["mixture.thetas=[0.5]", "mixture.windows=[50]"]).mixture.thetas == (0.5,)


def test_context_curves_and_kinds_are_checked():
    with pytest.raises(ConfigError, match=r"eval.context_positions' was replaced: .* eval.context_curves"):
        load_config(None, ["eval.context_positions=500"])
    with pytest.raises(ConfigError, match=r"eval.kinds.verse must be a non-empty list of source patterns"):
        load_config(None, ["eval.kinds={verse: []}"])
    with pytest.raises(ConfigError, match=r"eval.context_curves.verse = 0 must be a whole number of words >= 1"):
        load_config(None, ["eval.context_curves={verse: 0}"])
    cfg = load_config(None, ["eval.context_curves={}", "eval.kinds={poetry: ['wikisource-*'], rest: ['*']}"])
    assert cfg.eval.context_curves == {} and list(cfg.eval.kinds) == ["poetry", "rest"]


def test_an_out_of_range_value_is_refused_however_it_is_set(tmp_path):
    """On load, on --set and on replace alike: the message names where the value came from, the key, the value and
    the allowed range."""
    p = tmp_path / "wide.yaml"
    p.write_text("model:\n  dropout: 1.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: key 'model.dropout' = 1.5 is out of range; allowed [0.0, 0.99]"
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.dropout=1.5"])
    assert str(e.value) == ("--set model.dropout=1.5 (over defaults): key 'model.dropout' = 1.5 is out of range; "
                            "allowed [0.0, 0.99]")
    cfg = load_config(None)
    with pytest.raises(ConfigError, match=r"^ModelConfig: key 'model.dropout' = 1.5 is out of range; allowed \[0.0, 0.99\]$"):
        dataclasses.replace(cfg.model, dropout=1.5)
    with pytest.raises(ConfigError, match=r"^EvalConfig: key 'eval.max_words' = 0 is out of range; allowed \[1, ∞\]$"):
        cfg.replace(eval=dataclasses.replace(cfg.eval, max_words=0))
    with pytest.raises(ConfigError, match=r"^TrainConfig: key 'train.max_epochs': got '3' \(str\); expected int$"):
        dataclasses.replace(cfg.train, max_epochs="3")
    assert dataclasses.replace(cfg.model, dropout=0.5).dropout == 0.5


def test_rules_between_keys_hold_on_replace_too():
    cfg = load_config(None, ["model.output=adaptive", "model.cutoffs=[1000, 3000]", "model.gate_bias=1"])
    with pytest.raises(ConfigError, match=r"^ModelConfig: model.gate_bias=1.0 sets the LSTM forget gate"):
        dataclasses.replace(cfg.model, cell="rnn_tanh")
    with pytest.raises(ConfigError, match=r"^Config: model.output='adaptive' needs .* below tokenizer.vocab_size=2000"):
        cfg.replace(tokenizer=dataclasses.replace(cfg.tokenizer, vocab_size=2000))
    with pytest.raises(ConfigError, match=r"train.val_check_interval=2.5: above 1 it counts windows and must be whole"):
        load_config(None, ["train.val_check_interval=2.5"])
    # a rule broken by a --set names the file and the --set that took part
    with pytest.raises(ConfigError, match=r"^defaults with --set model.init=identity: model.init='identity' \(IRNN\)"):
        load_config(None, ["model.init=identity"])


def test_trainer_flags_are_checked_against_what_the_pipeline_passes_on(tmp_path):
    from pipeline.config import TRAINER_KEYS

    p = tmp_path / "gpu.yaml"
    p.write_text("train:\n  trainer: {accelerator: gpu, acelerator: gpu}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: train.trainer.acelerator='gpu' is not a Trainer argument the pipeline "
                                   f"passes on; allowed: {', '.join(TRAINER_KEYS)}")
    with pytest.raises(ConfigError, match=r"train.trainer.max_epochs=5: the pipeline sets the Trainer's max_epochs "
                                          r"from train.max_epochs; set that instead"):
        load_config(None, ["train.trainer.max_epochs=5"])
    with pytest.raises(ConfigError, match=r"^TrainConfig: train.trainer.callbacks=\[\] is not a Trainer argument"):
        dataclasses.replace(load_config(None).train, trainer={"callbacks": []})
    cfg = load_config(None, ["train.trainer={accelerator: gpu, devices: 4, strategy: ddp, num_nodes: 2, "
                             "precision: bf16-mixed}"])
    assert cfg.train.trainer["num_nodes"] == 2


def test_the_allowed_trainer_flags_are_trainer_arguments():
    """config.py names them without importing Lightning (the server runs without it); here they meet the real
    signature, so a Lightning upgrade that renames one fails this test, not a user's run."""
    import inspect

    import pytorch_lightning as pl

    from pipeline.config import _TRAINER_OWNED, TRAINER_KEYS

    params = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    assert set(TRAINER_KEYS) <= params and set(_TRAINER_OWNED) <= params
    assert not set(TRAINER_KEYS) & set(_TRAINER_OWNED)


def test_loading_a_config_does_not_import_lightning_or_mlflow():
    code = ("import sys; from pipeline.config import load_config; load_config(None, ['train.trainer={devices: 2}']);"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"


def test_the_run_hashes_of_the_shipped_configs_are_stable():
    """Trained runs, tokenizers and cached rows are found again by these hashes: a change of the config module that
    alters them makes every experiment start over. The values are the hand-written module's, from before the
    pydantic sections. A new or removed field changes the hashes of its section on purpose: update them then, and
    say so (the dead eval.long_document_words was dropped with that change: the whole-config hash of default.yaml
    was 25d288bb70d39da8 with it, and equals its hash without that key; issue 28's long-range keys changed it from
    e98b793ed3e641b3, eval.keystroke_words with make run's 1,000 from 91ee1f9fe8aa8431, and issue 27's warm starts
    and context ablation (eval.warm_*, eval.ablation*, eval.copy_targets, eval.effective_*) and training parity
    (experiment.train_pieces, lr_sweep*, seeds, rnn_init, decision_*) from 535d309627ffc2bc, eval.curve_positions
    with make run's 2,000 from 3e56f7b7641750e8, tracking.registered_name from d665e17c09fedb17,
    mixture.echo_limit from f022cee3551efcf4, eval.int8 from d4d8a6fd3a9234cc; the run hash below stayed)."""
    default = load_config(PROJECT_ROOT / "configs" / "default.yaml")
    assert default.hash("data", "tokenizer", "model", "train") == "d196ee4be914e52e"
    assert default.hash() == "a298156d887d7e56"
    # how many processes evaluate changes no result, so no hash (cached evaluations are found again)
    assert dataclasses.replace(default, eval=dataclasses.replace(default.eval, workers=2)).hash() == default.hash()
    # val_check_interval: 1000 in the file is read as 1000.0, as it always was; that is part of the run hash
    experiment = load_config(PROJECT_ROOT / "configs" / "experiment.yaml")
    assert experiment.train.val_check_interval == 1000.0 and isinstance(experiment.train.val_check_interval, float)
    assert experiment.hash("data", "tokenizer", "model", "train") == "d0d5d81868d04d2a"
    # in code an int keeps Lightning's meaning (1 batch, not the whole split)
    assert dataclasses.replace(experiment.train, limit_val_batches=1).limit_val_batches == 1


def test_a_removed_key_says_so():
    with pytest.raises(ConfigError, match=r"key 'eval.long_document_words' was removed: nothing read it"):
        load_config(None, ["eval.long_document_words=512"])
