"""SMPP 3.4 ESME: transport adapter, encoding, segmentation, receipts, routing. Knows nothing of Matrix."""
