"""The needs_service mark (tests/helpers/services.py): a missing system service skips, or fails under CI=true."""

from __future__ import annotations

import pytest

from helpers.services import missing_service, under_ci


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                             ("", pytest.skip.Exception), ("false", pytest.skip.Exception)])
def test_missing_service_fails_only_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type) -> None:
    monkeypatch.setenv("CI", ci)
    assert under_ci() == (outcome is pytest.fail.Exception)
    with pytest.raises(outcome, match="mosquitto"):
        missing_service("Debian package mosquitto not installed")


def test_service_modules_carry_the_mark() -> None:
    import test_cameras_mqtt
    import test_daemon_cameras
    import test_systemd_unit

    for module in (test_cameras_mqtt, test_daemon_cameras):
        marks = module.pytestmark if isinstance(module.pytestmark, list) else [module.pytestmark]
        assert any(m.name == "needs_service" for m in marks), module.__name__
    assert test_systemd_unit.needs_analyze.name == "needs_service"
