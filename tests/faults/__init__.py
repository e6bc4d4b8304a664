"""The fault suite: a Jepsen-style history checker over a 5-node cluster under faults."""
