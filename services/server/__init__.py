"""The server protocol: request parsing, the event protocol, conversations, WebSocket sessions.

Framework-free: `deployments/router.py` maps HTTP and WebSocket onto it.
"""
