"""docker-compose.yml and the Dockerfile say what the README and DESIGN.md say.

There is no Docker engine or compose plugin on the CI machines, so ``docker compose
config`` cannot run there. The file is validated instead by ``compose-spec`` (bindings of
the Rust ``compose_spec`` crate, a validating parser of the Compose Specification) and
checked for what scaling needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_services_and_order() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "migrate", "slack", "telegram"}
    assert "healthcheck" in services["db"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for bot in ("slack", "telegram"):
        depends = services[bot]["depends_on"]
        assert depends["db"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert services[bot]["environment"]["CHATBRIDGE_DATABASE_URL"].startswith(
            "postgresql+asyncpg://")
        assert services[bot]["env_file"] == [{"path": ".env", "required": False}]
        assert "container_name" not in services[bot]  # --scale needs generated names
        assert "ports" not in services[bot]  # a fixed host port would clash when scaled
        assert services[bot]["stop_grace_period"]  # time to hand turns back on SIGTERM
    assert services["slack"]["command"][:1] == ["slack"]
    assert services["telegram"]["command"][:2] == ["telegram", "--webhook"]


def test_dockerfile_installs_the_console_script() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for needed in ("COPY migrations", "pip install", 'ENTRYPOINT ["chatbridge"]', "USER "):
        assert needed in text


def test_compose_file_is_valid_compose_spec() -> None:
    from compose_spec import PyCompose

    parsed = PyCompose.from_yaml((ROOT / "docker-compose.yml").read_text())
    assert sorted(parsed.service_names()) == ["db", "migrate", "slack", "telegram"]
    with pytest.raises(ValueError):
        PyCompose.from_yaml("services:\n  bad:\n    restart: sometimes\n")
