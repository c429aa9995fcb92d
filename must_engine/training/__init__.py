"""MUST training: losses, optimiser, EMA teacher, data pipeline and the step-driven trainer."""
