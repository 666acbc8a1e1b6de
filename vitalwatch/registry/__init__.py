"""The regional session registry: de-identified session records from every clinic, stored once.

``wire`` is the MQTT contract between a gateway and the registry (record and receipt payloads),
``database`` the storage (SQLite for one clinic, PostgreSQL for a region, versioned SQL
migrations), ``service`` the ``vitalwatch registry`` process, ``offer`` the gateway side that
keeps each record until its receipt is in. Contract: docs/mqtt.md; operation: docs/registry.md.
"""
