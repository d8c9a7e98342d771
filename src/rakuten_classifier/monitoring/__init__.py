"""Production monitoring: the prediction log, feedback and live accuracy, drift against a reference profile."""
