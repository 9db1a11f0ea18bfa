"""YAML -> typed config: unknown keys, wrong types and out-of-range values name the file, key and allowed values."""
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


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
