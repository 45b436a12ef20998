"""Media relay between a WebRTC leg and a plain RTP trunk leg. Knows nothing of Matrix or SIP dialogs."""
