"""telebridge: a Matrix application service bridging Matrix to the phone network."""

__version__ = "0.1.0"
