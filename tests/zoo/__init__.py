"""A zoo of small users' models (transformers and plain torch) and the grid that runs every verb on them."""
