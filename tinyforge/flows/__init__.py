"""The command flows: each command's library function, built from the stages below
(build, inspect, flash, monitor, validate, selftest, doctor, the device arena measurement)."""
