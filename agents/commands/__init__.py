"""One module per command group; each defines ``register(subparsers)``.  Discovered by
``agents.cli``.  Keep heavy imports (faust, kafka) inside the handlers."""
