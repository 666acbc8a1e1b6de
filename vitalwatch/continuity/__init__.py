"""A session that survives a restart or is replayed: engine snapshots, journal restore and run recording."""
