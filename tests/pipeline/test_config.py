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
