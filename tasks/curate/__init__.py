"""Stages 3 and 4 of build-wit: matching captions to the vocabulary (with cross-file dedup), then balancing."""
