"""Infrastructure every room uses: errors, atomic writes, locks, the FormatSpec registry, CPU features."""
