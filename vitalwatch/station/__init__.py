"""The nurse station: one web page showing every bed of a site from MQTT, served by `vitalwatch station`.

The page (``static/``) connects to Mosquitto's WebSocket listener itself and keeps all state in
the browser; the Python side only serves files and ``config.json`` (docs/station.md).
"""

from vitalwatch.station.server import (
    STATIC_DIR,
    StationConfig,
    StationServer,
    serve_station,
    station_url,
)

__all__ = ["STATIC_DIR", "StationConfig", "StationServer", "serve_station", "station_url"]
