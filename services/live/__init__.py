"""Live listening: voice activity, endpointing and barge-in for a streamed microphone."""
