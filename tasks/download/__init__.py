"""Stage 5 of build-wit: the img2dataset driver (`driver.py`) and the egress guard (`guard.py`)."""
