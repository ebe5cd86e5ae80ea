"""On-disk formats: Hugging Face checkpoint directories and tellme's packed file."""
