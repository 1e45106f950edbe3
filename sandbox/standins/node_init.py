"""Custom-node stand-in for podforge's sandbox: the real node's requirements, no code; the
node types the real node registers follow (sandbox/repos.py STANDIN_NODE_TYPES)."""
