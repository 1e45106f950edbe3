"""Custom-node stand-in for podforge's sandbox: the real node's requirements, no code."""

NODE_CLASS_MAPPINGS: dict = {}
