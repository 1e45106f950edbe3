"""What runs on the pod, in the tools' venv (`podforge fetch`, `job`, `r2sync`, `verify`,
`workflows`; `/opt/podforge/tools`, from `locks/tools.txt`):
plain Python with the core's answers, no pyinfra. The controller imports the judges these
tools use (stamps, verify's), so a file or a service is judged the same on either side."""
