/*
 * powercut.so — an LD_PRELOAD library that simulates a power cut for the
 * files of one directory, for tests/powercut.rs.
 *
 * A process killed with SIGKILL loses nothing it wrote: its writes are in the
 * kernel's page cache and reach the disk later. A power cut loses every write
 * that no fsync/fdatasync made durable. This library gives a test that second
 * behaviour without a virtual machine or a device-mapper target:
 *
 *   - Writes to files under $POWERCUT_DIR go through as usual (the process
 *     reads back what it wrote), but before each one the bytes it overwrites
 *     and the file's size at its last sync are saved in an undo log kept per
 *     file (device + inode), in the process's memory.
 *   - fsync/fdatasync of any descriptor of a file empties that file's log: its
 *     writes are now durable.
 *   - When the file $POWERCUT_TRIGGER appears, a watcher thread waits for a
 *     moment when some file holds unsynced writes (at most $POWERCUT_WAIT_MS),
 *     stops every intercepted call there (a write lock they all take shared),
 *     undoes the logged writes of each file in reverse order, 4 KiB page by
 *     page — every page with POWERCUT_MODE=all (the default), each with
 *     probability 1/2 with POWERCUT_MODE=random (a disk that persisted some
 *     of its dirty pages: a write torn between pages) — zeroes lost pages
 *     past the old end, cuts the file back to its synced size or to the end
 *     of the last surviving page,
 *     writes a report to $POWERCUT_REPORT and ends the process with _exit(137)
 *     at once: no destructor, no flush, no further write.
 *
 * Not modelled (the store does not depend on them): loss of directory entries
 * (create/rename/unlink are durable at once), torn writes inside one page,
 * writes through mmap, and SQLite's -shm file (never durable: SQLite resets
 * it when the first connection opens the database after a crash).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 65536
#define MAX_FILES 64
#define PAGE 4096

struct undo {
    off_t off;
    size_t len;      /* bytes saved (the part of the write inside the old size) */
    size_t wrote;    /* bytes the write covered */
    char *old;
};

struct file {
    dev_t dev;
    ino_t ino;
    char path[4096];
    int dirty;             /* writes since the last sync */
    off_t synced_size;     /* size at the last sync */
    struct undo *log;
    size_t n, cap;
};

static struct file files[MAX_FILES];
static int nfiles;
static signed char tracked[MAX_FD]; /* fd -> file index + 1, 0 = not ours */
static pthread_rwlock_t cut_lock;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *dir;
static size_t dir_len;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);

static void resolve(void) {
    if (real_write)
        return;
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pread = dlsym(RTLD_NEXT, "pread");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fallocate = dlsym(RTLD_NEXT, "fallocate");
    real_posix_fallocate = dlsym(RTLD_NEXT, "posix_fallocate");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_write = dlsym(RTLD_NEXT, "write");
}

static struct file *file_of(int fd) {
    if (fd < 0 || fd >= MAX_FD || tracked[fd] == 0)
        return NULL;
    return &files[tracked[fd] - 1];
}

/* Called after a successful open: track fd when its path is ours. */
static void track(int fd, const char *path) {
    if (fd < 0 || fd >= MAX_FD || !dir)
        return;
    tracked[fd] = 0;
    char full[4096];
    if (path[0] == '/') {
        snprintf(full, sizeof full, "%s", path);
    } else {
        char cwd[2048];
        if (!getcwd(cwd, sizeof cwd))
            return;
        snprintf(full, sizeof full, "%s/%s", cwd, path);
    }
    if (strncmp(full, dir, dir_len) != 0)
        return;
    size_t l = strlen(full);
    if (l > 4 && strcmp(full + l - 4, "-shm") == 0)
        return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    pthread_mutex_lock(&log_lock);
    int i;
    for (i = 0; i < nfiles; i++)
        if (files[i].dev == st.st_dev && files[i].ino == st.st_ino)
            break;
    if (i == nfiles) {
        if (nfiles == MAX_FILES) {
            pthread_mutex_unlock(&log_lock);
            return;
        }
        memset(&files[i], 0, sizeof files[i]);
        files[i].dev = st.st_dev;
        files[i].ino = st.st_ino;
        nfiles++;
    }
    snprintf(files[i].path, sizeof files[i].path, "%s", full);
    tracked[fd] = (signed char)(i + 1);
    pthread_mutex_unlock(&log_lock);
}

/* Save what [off, off+len) holds now, before a write replaces it. */
static void save(int fd, struct file *f, off_t off, size_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    pthread_mutex_lock(&log_lock);
    if (!f->dirty) {
        f->dirty = 1;
        f->synced_size = st.st_size;
    }
    size_t keep = 0;
    if (off < st.st_size)
        keep = (size_t)(st.st_size - off) < len ? (size_t)(st.st_size - off) : len;
    char *old = keep ? malloc(keep) : NULL;
    if (keep && old) {
        ssize_t r = real_pread(fd, old, keep, off);
        keep = r > 0 ? (size_t)r : 0;
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 64;
        f->log = realloc(f->log, f->cap * sizeof *f->log);
    }
    f->log[f->n++] = (struct undo){off, keep, len, old};
    pthread_mutex_unlock(&log_lock);
}

static void synced(struct file *f) {
    pthread_mutex_lock(&log_lock);
    for (size_t i = 0; i < f->n; i++)
        free(f->log[i].old);
    f->n = 0;
    f->dirty = 0;
    pthread_mutex_unlock(&log_lock);
}

static ssize_t do_pwrite(ssize_t (*real)(int, const void *, size_t, off_t), int fd,
                         const void *buf, size_t len, off_t off) {
    resolve();
    struct file *f = file_of(fd);
    if (!f)
        return real(fd, buf, len, off);
    pthread_rwlock_rdlock(&cut_lock);
    save(fd, f, off, len);
    ssize_t r = real(fd, buf, len, off);
    pthread_rwlock_unlock(&cut_lock);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    resolve();
    return do_pwrite(real_pwrite, fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) {
    resolve();
    return do_pwrite(real_pwrite64, fd, buf, len, off);
}

ssize_t write(int fd, const void *buf, size_t len) {
    resolve();
    struct file *f = file_of(fd);
    if (!f)
        return real_write(fd, buf, len);
    pthread_rwlock_rdlock(&cut_lock);
    off_t off = lseek(fd, 0, SEEK_CUR);
    if (off >= 0)
        save(fd, f, off, len);
    ssize_t r = real_write(fd, buf, len);
    pthread_rwlock_unlock(&cut_lock);
    return r;
}

static int do_sync(int (*real)(int), int fd) {
    struct file *f = file_of(fd);
    if (!f)
        return real(fd);
    pthread_rwlock_rdlock(&cut_lock);
    int r = real(fd);
    if (r == 0)
        synced(f);
    pthread_rwlock_unlock(&cut_lock);
    return r;
}

int fsync(int fd) {
    resolve();
    return do_sync(real_fsync, fd);
}

int fdatasync(int fd) {
    resolve();
    return do_sync(real_fdatasync, fd);
}

/* A size change: saved as a write of nothing past the old end (the synced
 * size is what a cut restores), or of the cut-off tail when shrinking. */
static int do_resize(int (*real)(int, off_t), int fd, off_t size) {
    struct file *f = file_of(fd);
    if (!f)
        return real(fd, size);
    pthread_rwlock_rdlock(&cut_lock);
    struct stat st;
    if (fstat(fd, &st) == 0 && size < st.st_size)
        save(fd, f, size, (size_t)(st.st_size - size));
    else
        save(fd, f, st.st_size, 0);
    int r = real(fd, size);
    pthread_rwlock_unlock(&cut_lock);
    return r;
}

int ftruncate(int fd, off_t size) {
    resolve();
    return do_resize(real_ftruncate, fd, size);
}

int ftruncate64(int fd, off_t size) {
    resolve();
    return do_resize(real_ftruncate64, fd, size);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
    resolve();
    struct file *f = file_of(fd);
    if (!f)
        return real_fallocate(fd, mode, off, len);
    pthread_rwlock_rdlock(&cut_lock);
    save(fd, f, off, 0);
    int r = real_fallocate(fd, mode, off, len);
    pthread_rwlock_unlock(&cut_lock);
    return r;
}

int posix_fallocate(int fd, off_t off, off_t len) {
    resolve();
    struct file *f = file_of(fd);
    if (!f)
        return real_posix_fallocate(fd, off, len);
    pthread_rwlock_rdlock(&cut_lock);
    save(fd, f, off, 0);
    int r = real_posix_fallocate(fd, off, len);
    pthread_rwlock_unlock(&cut_lock);
    return r;
}

#define OPEN_BODY(real, ...)                                                   \
    resolve();                                                                 \
    mode_t mode = 0;                                                           \
    if (flags & (O_CREAT | O_TMPFILE)) {                                       \
        va_list ap;                                                            \
        va_start(ap, flags);                                                   \
        mode = va_arg(ap, mode_t);                                             \
        va_end(ap);                                                            \
    }                                                                          \
    int fd = real(__VA_ARGS__, flags, mode);                                   \
    if (fd >= 0)                                                               \
        track(fd, path);                                                       \
    return fd;

int open(const char *path, int flags, ...) { OPEN_BODY(real_open, path) }
int open64(const char *path, int flags, ...) { OPEN_BODY(real_open64, path) }
int openat(int at, const char *path, int flags, ...) {
    if (at != AT_FDCWD && path[0] != '/') {
        resolve();
        mode_t mode = 0;
        if (flags & (O_CREAT | O_TMPFILE)) {
            va_list ap;
            va_start(ap, flags);
            mode = va_arg(ap, mode_t);
            va_end(ap);
        }
        return real_openat(at, path, flags, mode); /* relative to a dir fd: not ours */
    }
    OPEN_BODY(real_openat, at, path)
}
int openat64(int at, const char *path, int flags, ...) {
    if (at != AT_FDCWD && path[0] != '/') {
        resolve();
        mode_t mode = 0;
        if (flags & (O_CREAT | O_TMPFILE)) {
            va_list ap;
            va_start(ap, flags);
            mode = va_arg(ap, mode_t);
            va_end(ap);
        }
        return real_openat64(at, path, flags, mode);
    }
    OPEN_BODY(real_openat64, at, path)
}

int close(int fd) {
    resolve();
    if (fd >= 0 && fd < MAX_FD)
        tracked[fd] = 0;
    return real_close(fd);
}

/* xorshift: the random mode's coin, seeded from $POWERCUT_SEED. */
static uint64_t rng_state;
static int coin(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (int)(rng_state & 1);
}

/* With the cut lock held for writing: whether some file has unsynced writes. */
static int any_dirty(void) {
    int dirty = 0;
    pthread_mutex_lock(&log_lock);
    for (int i = 0; i < nfiles; i++)
        dirty |= files[i].dirty;
    pthread_mutex_unlock(&log_lock);
    return dirty;
}

/* The power goes: at the first moment within $POWERCUT_WAIT_MS (default
 * 5000) that some file holds unsynced writes — the moment that tests
 * something — or at the end of that wait. */
static void cut(void) {
    const char *wait = getenv("POWERCUT_WAIT_MS");
    long left_us = (wait ? atol(wait) : 5000) * 1000;
    for (;;) {
        pthread_rwlock_wrlock(&cut_lock); /* no intercepted call runs from here on */
        if (any_dirty() || left_us <= 0)
            break;
        pthread_rwlock_unlock(&cut_lock);
        usleep(50);
        left_us -= 50;
    }
    pthread_mutex_lock(&log_lock);
    const char *mode = getenv("POWERCUT_MODE");
    int random_mode = mode && strcmp(mode, "random") == 0;
    const char *seed = getenv("POWERCUT_SEED");
    rng_state = seed ? strtoull(seed, NULL, 10) | 1 : 88172645463325252ULL;
    size_t undone = 0, kept = 0, bytes = 0, dirty_files = 0;
    for (int i = 0; i < nfiles; i++) {
        struct file *f = &files[i];
        if (!f->dirty)
            continue;
        dirty_files++;
        int fd = real_open(f->path, O_RDWR);
        if (fd < 0)
            continue; /* deleted since: nothing on disk to undo */
        off_t end_kept = f->synced_size;
        for (size_t k = f->n; k-- > 0;) {
            struct undo *u = &f->log[k];
            /* Page by page: a disk persists some pages of a write, not all. */
            for (off_t c0 = u->off; c0 < u->off + (off_t)u->wrote;) {
                off_t c1 = (c0 / PAGE + 1) * PAGE;
                if (c1 > u->off + (off_t)u->wrote)
                    c1 = u->off + (off_t)u->wrote;
                if (random_mode && coin()) {
                    kept++;
                    if (c1 > end_kept)
                        end_kept = c1;
                } else {
                    /* Lost: the old bytes where there were some, zeros (a
                     * hole) past the old end of the file. */
                    off_t saved_end = u->off + (off_t)u->len;
                    off_t mid = c1 < saved_end ? c1 : saved_end;
                    if (c0 < mid)
                        real_pwrite(fd, u->old + (c0 - u->off), (size_t)(mid - c0), c0);
                    static const char zeros[PAGE];
                    if (mid < c1 && c0 < c1)
                        real_pwrite(fd, zeros, (size_t)(c1 - (mid > c0 ? mid : c0)),
                                    mid > c0 ? mid : c0);
                    undone++;
                    bytes += (size_t)(c1 - c0);
                }
                c0 = c1;
            }
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_size > end_kept)
            real_ftruncate(fd, end_kept);
        real_fsync(fd);
        real_close(fd);
    }
    const char *report = getenv("POWERCUT_REPORT");
    if (report) {
        int fd = real_open(report, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            char line[256];
            int n = snprintf(line, sizeof line,
                             "dirty_files=%zu lost_pages=%zu lost_bytes=%zu kept_pages=%zu\n",
                             dirty_files, undone, bytes, kept);
            real_write(fd, line, (size_t)n);
            real_fsync(fd);
            real_close(fd);
        }
    }
    _exit(137);
}

static void *watch(void *arg) {
    const char *trigger = arg;
    for (;;) {
        if (access(trigger, F_OK) == 0)
            cut();
        usleep(200);
    }
    return NULL;
}

__attribute__((constructor)) static void init(void) {
    resolve();
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* A waiting cut must not starve behind a stream of writers. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&cut_lock, &attr);
    dir = getenv("POWERCUT_DIR");
    dir_len = dir ? strlen(dir) : 0;
    const char *trigger = getenv("POWERCUT_TRIGGER");
    if (dir && trigger) {
        pthread_t t;
        pthread_create(&t, NULL, watch, strdup(trigger));
        pthread_detach(t);
    }
}
