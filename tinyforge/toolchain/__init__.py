"""Stage: the toolchain. PlatformIO (project checks, package checks, builds), tinyforge's own
offline PlatformIO core dir, and the compiler, QEMU and SCons found on this machine."""
