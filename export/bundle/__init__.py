"""The deployment bundle: layout and README, manifest, packing, signing, reproducibility."""
