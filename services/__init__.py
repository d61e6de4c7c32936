"""avatar-serve stage logic: plain Python, no Ray import (the Ray shims live in `deployments/`)."""
