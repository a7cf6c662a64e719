/* Disk faults at the libc boundary, for tests/localdts/test_disk_faults.py (LD_PRELOAD, compiled by the test).
 *
 * Writes (write, pwrite, pwrite64) to files under $FAULTFS_DIR fail with ENOSPC while $FAULTFS_CONTROL/enospc
 * exists, with EROFS while $FAULTFS_CONTROL/erofs exists; fsync and fdatasync of those files fail with EIO while
 * $FAULTFS_CONTROL/eio-fsync exists. Everything else (other files, stderr, sockets) is untouched. While
 * "enospc" is on, statvfs says the file system has no space left, as a full disk does.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

static int fault_on(const char *name) {
    const char *control = getenv("FAULTFS_CONTROL");
    if (!control) return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", control, name);
    struct stat st;
    return stat(path, &st) == 0;
}

static int under_dir(int fd) {
    const char *dir = getenv("FAULTFS_DIR");
    if (!dir) return 0;
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    return strncmp(target, dir, strlen(dir)) == 0;
}

static int write_fault(int fd) {
    if (!under_dir(fd)) return 0;
    if (fault_on("enospc")) { errno = ENOSPC; return 1; }
    if (fault_on("erofs")) { errno = EROFS; return 1; }
    return 0;
}

ssize_t write(int fd, const void *buf, size_t count) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    if (write_fault(fd)) return -1;
    return real(fd, buf, count);
}
ssize_t pwrite(int fd, const void *buf, size_t count, off_t off) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite");
    if (write_fault(fd)) return -1;
    return real(fd, buf, count, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t off) {
    static ssize_t (*real)(int, const void *, size_t, off64_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    if (write_fault(fd)) return -1;
    return real(fd, buf, count, off);
}
static int sync_fault(int fd) {
    if (!under_dir(fd)) return 0;
    if (fault_on("eio-fsync")) { errno = EIO; return 1; }
    return 0;
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    if (sync_fault(fd)) return -1;
    return real(fd);
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    if (sync_fault(fd)) return -1;
    return real(fd);
}

/* A full disk has no space left: say so to statvfs (and statvfs64) about the faulty directory. */
#define NO_SPACE_WHEN_FULL(path, buf)                                                       \
    do {                                                                                    \
        const char *dir = getenv("FAULTFS_DIR");                                            \
        if (dir && strncmp(path, dir, strlen(dir)) == 0 && fault_on("enospc")) {            \
            (buf)->f_bavail = 0;                                                            \
            (buf)->f_bfree = 0;                                                             \
        }                                                                                   \
    } while (0)

int statvfs(const char *path, struct statvfs *buf) {
    static int (*real)(const char *, struct statvfs *);
    if (!real) real = dlsym(RTLD_NEXT, "statvfs");
    int rc = real(path, buf);
    if (rc == 0) NO_SPACE_WHEN_FULL(path, buf);
    return rc;
}
int statvfs64(const char *path, struct statvfs64 *buf) {
    static int (*real)(const char *, struct statvfs64 *);
    if (!real) real = dlsym(RTLD_NEXT, "statvfs64");
    int rc = real(path, buf);
    if (rc == 0) NO_SPACE_WHEN_FULL(path, buf);
    return rc;
}
