"""Persona LLM stage: conversation -> streamed reply."""
