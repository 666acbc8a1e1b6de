"""Getting alerts out, never losing one: durable outbox, MQTT publisher, payloads, nurse commands."""
