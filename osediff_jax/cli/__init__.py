"""What every command shares: the exit-code contract, interrupts (Ctrl-C, SIGTERM), paths as the
user typed them, and checking that outputs can be written before any model is loaded.
May import: every other subpackage (files, models, weights, data, inference, metrics, training)."""
