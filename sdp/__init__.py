"""SDP (RFC 4566) and offer/answer (RFC 3264), shared by sip/ (which carries it) and media/ (which negotiates it)."""
