"""Stage: the device. The serial protocol, a conversation over a link, serial ports, where the
device is (a port or QEMU) and the emulator. Never imports `toolchain`."""
