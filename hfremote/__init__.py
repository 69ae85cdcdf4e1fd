"""hfremote."""
