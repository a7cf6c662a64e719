/* Disk faults on demand, for localbus's tests (LD_PRELOAD into a `python -m localbus` child).
 *
 * While the file named by LOCALBUS_FAULT holds "fsync", fsync and fdatasync fail with EIO (a dying disk, or a
 * network file system losing its server). While it holds "rofs", writes to files under LOCALBUS_FAULT_DIR fail
 * with EROFS (what the kernel does after remounting a file system read-only on errors). Otherwise every call
 * goes to the C library untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static char fault_mode(void) {
    const char *path = getenv("LOCALBUS_FAULT");
    if (path == NULL) return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    int c = fgetc(f);
    fclose(f);
    return c == EOF ? 0 : (char)c;
}

static int in_fault_dir(int fd) {
    const char *dir = getenv("LOCALBUS_FAULT_DIR");
    char link[64], target[4096];
    if (dir == NULL) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = '\0';
    return strncmp(target, dir, strlen(dir)) == 0;
}

#define REAL(name) static __typeof__(name) *real_##name; \
    if (real_##name == NULL) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

int fsync(int fd) {
    REAL(fsync);
    if (fault_mode() == 'f') { errno = EIO; return -1; }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    if (fault_mode() == 'f') { errno = EIO; return -1; }
    return real_fdatasync(fd);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite64);
    if (fault_mode() == 'r' && in_fault_dir(fd)) { errno = EROFS; return -1; }
    return real_pwrite64(fd, buf, count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite);
    if (fault_mode() == 'r' && in_fault_dir(fd)) { errno = EROFS; return -1; }
    return real_pwrite(fd, buf, count, offset);
}

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write);
    if (fault_mode() == 'r' && in_fault_dir(fd)) { errno = EROFS; return -1; }
    return real_write(fd, buf, count);
}
