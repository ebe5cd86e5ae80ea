"""Tests on checkpoints made with transformers (they need torch; the sanitizer run leaves them out)."""
