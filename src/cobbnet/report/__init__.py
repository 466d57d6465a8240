"""What a reader sees: the overlay, evaluation plots. No torch."""
