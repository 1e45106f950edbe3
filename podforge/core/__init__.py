"""The pure core: settings, the plan, the catalog, pins, stacks and locks, workflow fitting,
unit text. No I/O and no import of podforge's other packages (tests/unit/test_boundaries.py),
so the laptop, the image build and the pod compute the same answers, tested on tables."""
