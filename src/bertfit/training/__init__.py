"""Fine-tuning: the recipe, the loop, optimiser and schedule, cached features, growth with new labels, search."""
