"""ipanon's pure core.

Nothing in this package talks to Kafka, Faust or Prometheus, reads the clock or the
environment: time arrives as ``now_ms`` arguments and configuration as objects built at the
edge (``agents/``).  ``tests/unit/test_purity.py`` enforces the import rule.
"""
