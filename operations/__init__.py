"""podforge's own pyinfra operations: each compares a batched fact with the wish."""
