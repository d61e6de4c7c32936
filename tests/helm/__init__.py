"""Tests of the Helm chart helm/avatar-serve (need helm; skip cleanly without it)."""
