"""SIP user agent core (RFC 3261) for carrier trunks. Knows nothing of Matrix."""
