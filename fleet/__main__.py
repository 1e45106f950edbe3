"""python -m fleet rollout INVENTORY [--batch N] [--fail-percent P] [--limit PATTERN]"""

import sys

from fleet import rollout

if len(sys.argv) < 2 or sys.argv[1] != "rollout":
    sys.exit("usage: python -m fleet rollout INVENTORY [options]  (--help for the options)")
sys.exit(rollout.main(sys.argv[2:]))
