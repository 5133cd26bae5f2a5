"""Stage: the model. Reading, converting and quantizing it, the checks it must pass for a
board, its arena and its fit. Depends on `board` and the base modules."""
