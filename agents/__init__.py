"""ipanon's Faust shell: thin agents, CLI and Kafka plumbing around the pure core in stream/."""
