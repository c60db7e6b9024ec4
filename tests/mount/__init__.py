"""Real-mount tier: pools mounted with MERGERFS_CMD (default: python -m mergerfs) vs native dirs."""
