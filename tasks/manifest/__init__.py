"""Stage 6 of build-wit: what the build hands over: manifest.json, datacard.md, tokenizer.json."""
