"""The laptop side of a fleet: rollouts in batches, the per-pod report, SSH keepalives.

Runs where pyinfra runs (the laptop, CI); the pure parts (batches, budget, report rows)
live in fleet/runs.py and the RunPod API in fleet/runpod.py.
"""
