"""Fixtures of the integration tests: the browser tests' (tests/integration/station_browser.py)."""

from tests.integration.station_browser import browser_setup, screenshot_dir, ws_mosquitto

__all__ = ["browser_setup", "screenshot_dir", "ws_mosquitto"]
