"""ipanon's Faust shell: thin agents, CLI and Kafka plumbing around the pure core in stream/."""

# Before anything imports the core: serve its compiled build when one matches the sources
# (agents/compiled_core.py; IPANON_CORE=interpreted turns it off).
from .compiled_core import install as _install_compiled_core

_install_compiled_core()
