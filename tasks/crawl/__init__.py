"""Stage 2 of build-wit: candidate (image URL, alt text) pairs: see extract.py."""
