"""Where pods are built from (the laptop, CI, the image's build stages), never run on a pod:
`podforge stack lock|check` and the requirement texts it reads, podforge's own wheel, the
image's stack stage."""
