"""Render stage: speech + phoneme timings -> lip-synced video frames."""
