"""The daemon and how it looks after itself: supervisor, health, watchdog, metrics, clock, fail-safe."""
