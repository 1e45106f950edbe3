"""podforge: idempotent ComfyUI GPU pod provisioning (shared library + pod-side tools)."""
