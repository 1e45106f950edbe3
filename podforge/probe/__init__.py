"""Standard library only: facts/pod.py ships these modules' sources to the pod's system
python3 (no venv needed) and runs them as one program, the one command of a no-op."""
