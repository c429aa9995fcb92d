"""Pretrained image-text models: where they come from, and the MUST model built on them."""
