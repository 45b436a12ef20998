"""Shared fixtures. Peer fixtures (Synapse, PostgreSQL, sipp, SMSC) live in tests/peers/*.py."""
