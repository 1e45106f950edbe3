"""What runs on the controller, the machine that drives a deploy (the laptop, CI, the image's
build stages, the pod at boot as its own controller): `podforge stack lock|check` and the
requirement texts it reads, the image's stack layer, podforge's own wheel. Like every module
of podforge it ships in that wheel; nothing on the pod's side imports it."""
