"""One module per command: parse options, call one flow, print the result."""
