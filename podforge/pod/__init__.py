"""What runs on the pod, in its venv (`podforge fetch`, `r2sync`, `verify`, `workflows`):
plain Python with the core's answers, no pyinfra. The controller imports the judges these
tools use (stamps, verify's), so a file or a service is judged the same on either side."""
