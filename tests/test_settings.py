import pytest

from ragtune.errors import ConfigError
from ragtune.settings import Settings


def test_precedence_defaults_file_env_flags(tmp_path):
    cfg = tmp_path / "ragtune.toml"
    cfg.write_text('top_k = 7\nchunk_tokens = 150\nbot = "filebot"\n')
    s, origins = Settings.load_with_origins(
        overrides={"bot": "flagbot", "home": None}, env={"RAGTUNE_TOP_K": "9"}, config_file=cfg
    )
    assert s.chunk_tokens == 150 and origins["chunk_tokens"] == str(cfg)
    assert s.top_k == 9 and origins["top_k"] == "env RAGTUNE_TOP_K"
    assert s.bot == "flagbot" and origins["bot"] == "flag"
    assert s.rrf_k == 60 and origins["rrf_k"] == "default"


def test_home_from_env_and_no_progress():
    s = Settings.load(env={"RAGTUNE_HOME": "/tmp/x", "RAGTUNE_NO_PROGRESS": "1"})
    assert str(s.home_path) == "/tmp/x" and s.progress is False


def test_unknown_choice_lists_valid_values():
    with pytest.raises(ConfigError, match="valid values: minilm, minilm-torch, openai, hash"):
        Settings.load(overrides={"embedder": "minilmm"}, env={})


def test_unknown_setting_in_file_is_an_error(tmp_path):
    cfg = tmp_path / "ragtune.toml"
    cfg.write_text("top_kk = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'top_kk'"):
        Settings.load(env={}, config_file=cfg)


def test_bad_types_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="top_k must be a int"):
        Settings.load(env={"RAGTUNE_TOP_K": "many"})
    cfg = tmp_path / "bad.toml"
    cfg.write_text("top_k = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(env={}, config_file=cfg)


def test_every_setting_is_documented():
    for row in Settings().describe():
        assert row["help"].strip(), row["name"]
