"""Pure PIL/numpy image and mask functions (no model, no options, no I/O)."""
