"""TTS stage: reply sentence -> speech with phoneme timings."""
