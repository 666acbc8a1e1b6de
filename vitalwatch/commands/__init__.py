"""One module per ``vitalwatch`` sub-command; each has ``register(subparsers)`` and ``run(args)``."""
