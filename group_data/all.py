# Defaults for every pod. Each setting, its default and what it accepts are documented
# once, on its field in podforge/core/config.py (the laptop, the image build and the pod's own
# `python -m podforge plan` all read that one model). Set values here only to change them
# for every host; environment variables with the setting's upper-case name win over all.

phase = "pod"  # image (docker build) | pod (over SSH) | boot (start.sh at container start)
