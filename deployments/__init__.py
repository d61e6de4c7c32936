"""Ray Serve shims over `services/`: one deployment per stage, the router, the app builder."""
