"""The external-target stand-ins skip, naming what a test needed, instead of failing or faking it."""

from __future__ import annotations

import pytest

from tests.fixtures.target import ExternalBus, ExternalDts


def test_an_external_bus_offers_its_connection_string_and_skips_anything_else() -> None:
    bus = ExternalBus("Endpoint=sb://emulator;SharedAccessKeyName=k;SharedAccessKey=v")
    assert bus.connection_string.startswith("Endpoint=sb://emulator")
    with pytest.raises(pytest.skip.Exception, match=r"localbus\.restart"):
        bus.restart()


def test_an_external_dts_parses_its_settings_and_skips_outages() -> None:
    dts = ExternalDts("Endpoint=http://emulator:8080;Authentication=None")
    assert dts.settings.endpoint == "http://emulator:8080"
    with pytest.raises(pytest.skip.Exception, match="restarting the DTS backend"):
        dts.restart()
