"""Stage 1 of build-wit: the query vocabulary (see build.py), per language."""
