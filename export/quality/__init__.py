"""Is every artifact right? Parity, golden files, the accuracy gate, int8 repair, reports, the MediaPipe check."""
