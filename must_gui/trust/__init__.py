"""The app side of trust without labels: spot-check, known labels, changed predictions,
unsure images and corrections (the engine side is must_engine.trust)."""
