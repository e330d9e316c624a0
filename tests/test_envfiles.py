"""portal/envfiles.py: the settings a second terminal's manage.py takes from `make run`."""

from __future__ import annotations

import os

from portal.envfiles import DEMO_SETTINGS, read_env_files, write_demo_env


def test_the_demo_file_holds_only_the_demo_settings_and_only_its_owner_reads_it(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KAIKETSU_DEMO_ENV", str(tmp_path / "demo.env"))
    env = {
        "DEBUG": "true",
        "REDIS_URL": "redis://127.0.0.1:6400/0",
        "KAIKETSU_QUEUE": "kaiketsu",
        "SECRET_KEY": "never-copied",
        "FIELD_ENCRYPTION_KEY": "never-copied-either",
    }
    path = write_demo_env(env)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "demo.env"
    assert "REDIS_URL=redis://127.0.0.1:6400/0\n" in text and "DEBUG=true\n" in text
    assert "never-copied" not in text
    settings_lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert {line.split("=", 1)[0] for line in settings_lines} <= set(DEMO_SETTINGS)
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_environment_wins_then_the_demo_file_then_dot_env(tmp_path, monkeypatch):
    demo = tmp_path / "demo.env"
    demo.write_text("REDIS_URL=redis://demo:1/0\nKAIKETSU_QUEUE=from-demo\n", encoding="utf-8")
    dot_env = tmp_path / ".env"
    dot_env.write_text(
        "REDIS_URL=redis://dotenv:1/0\nKAIKETSU_QUEUE=from-dotenv\nLANGUAGE_CODE=en\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KAIKETSU_QUEUE", "from-the-environment")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("LANGUAGE_CODE", raising=False)
    try:
        assert read_env_files([demo, dot_env, tmp_path / "missing.env"]) == [demo, dot_env]
        assert os.environ["KAIKETSU_QUEUE"] == "from-the-environment"
        assert os.environ["REDIS_URL"] == "redis://demo:1/0"
        assert os.environ["LANGUAGE_CODE"] == "en"
    finally:
        for name in ("REDIS_URL", "LANGUAGE_CODE"):
            os.environ.pop(name, None)
