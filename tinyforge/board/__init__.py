"""Stage: the board. Profiles (`boards/*.toml`), the op-to-resolver tables of its TFLM, and a
local TFLM source tree. Depends only on the base modules."""
