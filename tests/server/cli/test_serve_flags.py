"""``nrg serve``'s flags take their defaults from ``ServerConfig`` and ``Limits``, and a limit beyond
what guidance runs is refused when the configuration is made, not when a request needs it."""

from __future__ import annotations

import os

import pytest

from guidance.nrg import MAX_PARTICLES
from server.cli import build_parser, main
from server.cli.serve import server_config
from server.config import DEMO_JUDGES, ServerConfig
from server.schema import Limits


@pytest.fixture
def no_nrg_env(monkeypatch):
    for name in [name for name in os.environ if name.startswith("NRG_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_flags_default_to_the_server_config(no_nrg_env, command):
    config = server_config(build_parser().parse_args([command]))
    expected = ServerConfig(judges=dict(DEMO_JUDGES), role="worker" if command == "worker" else ServerConfig.role)
    assert config == expected


def test_max_particles_beyond_guidance_is_refused_at_config_time(no_nrg_env, tmp_path, capsys):
    assert Limits().max_particles <= MAX_PARTICLES
    with pytest.raises(ValueError, match=f"guidance runs at most {MAX_PARTICLES} particles"):
        Limits(max_particles=MAX_PARTICLES + 1)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--max-particles", str(MAX_PARTICLES + 1), "--data-dir", str(tmp_path / "data")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(f"nrg: error: max_particles (--max-particles) is {MAX_PARTICLES + 1}")


@pytest.mark.parametrize(("argv", "env", "backend"), [
    ([], None, None),
    (["--compile"], None, "inductor"),
    (["--compile", "aot_eager"], None, "aot_eager"),
    ([], "1", "inductor"),
    ([], "eager", "eager"),
    ([], "0", None),
    (["--compile", "aot_eager"], "inductor", "aot_eager"),
])
def test_compile_takes_an_optional_backend_flag_or_variable(no_nrg_env, monkeypatch, argv, env, backend):
    if env is not None:
        monkeypatch.setenv("NRG_COMPILE", env)
    assert server_config(build_parser().parse_args(["serve", *argv])).compile_backend == backend


def test_an_unknown_compile_backend_is_refused_before_loading(no_nrg_env, monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--compile", "turbo", "--data-dir", str(tmp_path / "data")])
    assert exited.value.code == 2 and "--compile" in capsys.readouterr().err
    monkeypatch.setenv("NRG_COMPILE", "turbo")  # not checked by argparse
    with pytest.raises(SystemExit):
        main(["serve", "--data-dir", str(tmp_path / "data")])
    assert "--compile must be one of inductor, aot_eager, eager; got 'turbo'" in capsys.readouterr().err


def test_the_attention_backend_is_a_flag_or_a_variable_and_checked_before_loading(no_nrg_env, monkeypatch, tmp_path,
                                                                                   capsys):
    assert server_config(build_parser().parse_args(["serve", "--attention-backend", "flex"])).attention_backend == "flex"
    monkeypatch.setenv("NRG_ATTENTION_BACKEND", "_native_math")
    assert server_config(build_parser().parse_args(["serve"])).attention_backend == "_native_math"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--attention-backend", "turbo", "--data-dir", str(tmp_path / "data")])
    assert exited.value.code == 2 and "--attention-backend" in capsys.readouterr().err
    monkeypatch.setenv("NRG_ATTENTION_BACKEND", "flash")  # not checked by argparse: by the loader, before loading
    with pytest.raises(SystemExit):
        main(["serve", "--device", "cpu", "--data-dir", str(tmp_path / "data")])
    assert "--attention-backend flash needs a CUDA device" in capsys.readouterr().err


def test_the_step_cache_is_a_flag_or_a_variable_and_refused_with_compile_before_loading(no_nrg_env, monkeypatch,
                                                                                       tmp_path, capsys):
    assert server_config(build_parser().parse_args(["serve", "--step-cache", "0.05"])).step_cache_threshold == 0.05
    monkeypatch.setenv("NRG_STEP_CACHE", "0.1")
    assert server_config(build_parser().parse_args(["serve"])).step_cache_threshold == 0.1
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--step-cache", "-1", "--data-dir", str(tmp_path / "data")])
    assert exited.value.code == 2 and "step cache threshold must be a number >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--compile", "--device", "cpu", "--data-dir", str(tmp_path / "data")])
    assert "--step-cache and --compile do not go together" in capsys.readouterr().err
