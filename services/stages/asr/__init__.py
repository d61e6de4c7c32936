"""ASR stage: speech -> text with word timings."""
