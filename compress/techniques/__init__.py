"""One module per compression technique (and the healing that follows them)."""
