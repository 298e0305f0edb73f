"""One module per failure family of TAXONOMY.md; the engine's registry lists them explicitly."""
