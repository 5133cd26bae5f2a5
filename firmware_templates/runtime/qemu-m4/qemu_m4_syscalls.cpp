// The newlib system calls of the qemu-m4 target: stdout/stderr go to UART0, the heap
// grows from the end of .bss up to the stack's reserved area (qemu-m4.ld), exit stops QEMU.
#include <errno.h>
#include <sys/stat.h>

#include "qemu_m4.h"

extern "C" {

// From the linker script: the heap lies between these.
extern char __HeapBase;
extern char __StackLimit;

int _write(int fd, const char* data, int length) {
  if (fd != 1 && fd != 2) {
    errno = EBADF;
    return -1;
  }
  qemu_m4::UartWrite(data, static_cast<size_t>(length));
  return length;
}

// stdin is not wired to the UART: the sketch reads it with BoardSerialRead().
int _read(int, char*, int) { return 0; }

void* _sbrk(ptrdiff_t increment) {
  static char* heap_end = &__HeapBase;
  // Stop at the reserved stack rather than let malloc return memory the stack uses.
  if (increment > &__StackLimit - heap_end || increment < &__HeapBase - heap_end) {
    errno = ENOMEM;
    return reinterpret_cast<void*>(-1);
  }
  char* previous = heap_end;
  heap_end += increment;
  return previous;
}

int _close(int) { return -1; }

int _fstat(int, struct stat* status) {
  status->st_mode = S_IFCHR;
  return 0;
}

int _isatty(int fd) { return fd <= 2; }

int _lseek(int, int, int) { return 0; }

int _getpid() { return 1; }

// abort() raises SIGABRT through _kill; report it rather than exit silently.
int _kill(int, int) {
  qemu_m4::UartWriteString("\r\ntinyforge: ABORT\r\n");
  qemu_m4::Exit(qemu_m4::kExitAbort);
}

[[noreturn]] void _exit(int status) { qemu_m4::Exit(status); }

}  // extern "C"
