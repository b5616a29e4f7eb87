"""Training: the solver schedule, the driver (run folder, supervision, resume) and its worker processes."""
