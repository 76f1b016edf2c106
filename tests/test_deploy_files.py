"""docker-compose.yml and the Dockerfile say what the README and DESIGN.md say.

(No Docker engine or compose on the CI machines: this checks the structure, not a run.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        assert services[bot]["env_file"] == ".env"
        assert services[bot]["environment"]["CHATBRIDGE_DATABASE_URL"].startswith(
            "postgresql+asyncpg://")
    assert services["slack"]["command"][:1] == ["slack"]
    assert services["telegram"]["command"][:2] == ["telegram", "--webhook"]


def test_dockerfile_installs_the_console_script() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for needed in ("COPY migrations", "pip install", 'ENTRYPOINT ["chatbridge"]', "USER "):
        assert needed in text
