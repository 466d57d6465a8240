"""Spine geometry: the (17, 4, 2) landmark layout, the challenge's Cobb angle rules, metrics and the label audit. No torch."""
