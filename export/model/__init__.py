"""The model: variants (the VariantSpec registry), build, weights and the sample photos."""
