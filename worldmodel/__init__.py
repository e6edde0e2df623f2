"""wmplan world models: V-JEPA-style encoder, action-conditioned predictor, datasets, training."""
