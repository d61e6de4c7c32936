"""The `avatar` command line and the tools behind it (talk, client, MP4 writer, monitor)."""
