/*
 * alloc_trace.c: an LD_PRELOAD logger of malloc-family calls, for recording
 * real programs' allocation traces (benches/tools/README.md).
 *
 * Design notes
 * ------------
 * - What it wraps: malloc, free, calloc, realloc, reallocarray,
 *   posix_memalign, aligned_alloc, memalign, valloc, pvalloc. Each wrapper
 *   calls glibc's own entry point (__libc_malloc, ...), never dlsym, so there
 *   is no bootstrap recursion: dlsym itself allocates.
 * - Where records go: each thread appends fixed-size binary records
 *   (struct record) to a buffer in its own thread-local storage
 *   (initial-exec TLS: no allocation, no lock) and writes the whole buffer
 *   with one write(2) when it is full, when the thread exits (a pthread key
 *   destructor) and when the process exits (a destructor). Each process
 *   writes its own file, $NTA_TRACE_DIR/<pid>.<n>.ntatrace (n: the first
 *   free number, so an exec under the same pid starts a new file), opened
 *   O_APPEND: whole-buffer writes from different threads never interleave
 *   inside a record.
 * - Order: a process-wide sequence number is taken with one relaxed atomic
 *   add per call, *before* the real call for free and realloc (the block is
 *   released inside the call) and *after* it for the allocating calls (the
 *   block exists only once the call returns). A block freed by one thread
 *   and handed out again to another is then always ordered free-before-
 *   allocation: both threads' adds are ordered by the allocator's own
 *   synchronisation, and adds to one atomic follow that order. A monotonic
 *   timestamp orders records of different processes (separate heaps).
 * - Recursion: a thread-local flag marks "inside a wrapper"; a call made
 *   while it is set (write(2) or pthread internals allocating, a signal
 *   handler interrupting a wrapper) goes straight to glibc unrecorded. The
 *   converter (nta-bench convert) counts what that leaves inconsistent.
 * - fork: the child gets a copy of the forking thread's buffer, which holds
 *   the parent's records; a pthread_atfork child handler drops that copy,
 *   forgets the parent's file and the cached thread id, and notes the
 *   parent's pid and sequence number in the child's file header.
 *
 * - malloc_usable_size is forwarded to glibc's (looked up in libc.so.6
 *   itself), so a program linked against another allocator (Debian's
 *   redis-server imports malloc and malloc_usable_size from libjemalloc)
 *   runs consistently on glibc under the logger. Such a program's trace is
 *   the request stream it makes on glibc.
 *
 * Environment: NTA_TRACE_DIR (required; nothing is recorded without it),
 * read once at start, since some programs clear their environment.
 *
 * Limits, by design: records still in the buffers of threads that are alive
 * when the process exits, or of a process killed by a signal, are lost.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

/* Operation codes (struct record.op); the converter reads the same. */
enum {
    OP_MALLOC = 1,         /* arg0 size */
    OP_FREE = 2,           /* arg0 ptr */
    OP_CALLOC = 3,         /* arg0 count, arg1 size */
    OP_REALLOC = 4,        /* arg0 old ptr, arg1 size */
    OP_MEMALIGN = 5,       /* arg0 alignment, arg1 size (also aligned_alloc) */
    OP_POSIX_MEMALIGN = 6, /* arg0 alignment, arg1 size */
    OP_VALLOC = 7,         /* arg1 size (also pvalloc) */
};

/* One call. Little-endian, 48 bytes, no padding. result is 0 on failure. */
struct record {
    uint64_t seq;
    uint64_t time_ns;
    uint64_t arg0;
    uint64_t arg1;
    uint64_t result;
    uint32_t tid;
    uint32_t op;
};
_Static_assert(sizeof(struct record) == 48, "record layout is the file format");

/* File header: magic, version, record size, pid, parent pid (0 unless the
 * process was forked while traced), the parent's sequence number at fork. */
struct header {
    char magic[8];
    uint32_t version;
    uint32_t record_bytes;
    uint32_t pid;
    uint32_t parent_pid;
    uint64_t fork_seq;
};
_Static_assert(sizeof(struct header) == 32, "header layout is the file format");

#define BUFFER_RECORDS 1024

struct thread_buffer {
    uint32_t len;
    uint32_t tid;
    int key_set;
    struct record records[BUFFER_RECORDS];
};

static __thread struct thread_buffer buffer __attribute__((tls_model("initial-exec")));
static __thread int in_wrapper __attribute__((tls_model("initial-exec")));

static uint64_t next_seq;
static int trace_fd = -1;
static int disabled;
static uint32_t parent_pid;
static uint64_t fork_seq;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t exit_key;
static int exit_key_ready;

static void write_all(int fd, const void *data, size_t len) {
    const char *bytes = data;
    while (len > 0) {
        ssize_t written = write(fd, bytes, len);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return;
        bytes += written;
        len -= (size_t)written;
    }
}

static void say(const char *text) { write_all(2, text, strlen(text)); }

/* Appends the decimal digits of value to out; returns the new end. */
static char *put_decimal(char *out, uint64_t value) {
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (count > 0)
        *out++ = digits[--count];
    return out;
}

/* $NTA_TRACE_DIR, copied at start: some programs clear their environment
 * (nginx's workers keep only TZ). Empty: not read yet. */
static char trace_dir[3072];

/* Copies $NTA_TRACE_DIR into trace_dir; disables recording without it. */
static void read_trace_dir(void) {
    const char *dir = getenv("NTA_TRACE_DIR");
    if (dir == NULL || dir[0] == '\0' || strlen(dir) >= sizeof trace_dir) {
        disabled = 1;
        return;
    }
    memcpy(trace_dir, dir, strlen(dir) + 1);
}

/* Opens this process's file (under open_lock). */
static void open_trace_file(void) {
    if (trace_dir[0] == '\0')
        read_trace_dir();
    if (disabled)
        return;
    const char *dir = trace_dir;
    uint32_t pid = (uint32_t)getpid();
    for (uint64_t n = 0; n < 1000; n++) {
        char path[4096];
        char *end = path;
        size_t dir_len = strlen(dir);
        memcpy(end, dir, dir_len);
        end += dir_len;
        *end++ = '/';
        end = put_decimal(end, pid);
        *end++ = '.';
        end = put_decimal(end, n);
        memcpy(end, ".ntatrace", sizeof(".ntatrace"));
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            break;
        struct header header = {
            .magic = {'N', 'T', 'A', 'T', 'R', 'A', 'C', 'E'},
            .version = 1,
            .record_bytes = sizeof(struct record),
            .pid = pid,
            .parent_pid = parent_pid,
            .fork_seq = fork_seq,
        };
        write_all(fd, &header, sizeof header);
        __atomic_store_n(&trace_fd, fd, __ATOMIC_RELEASE);
        return;
    }
    say("alloc_trace: cannot create a trace file in $NTA_TRACE_DIR; not recording\n");
    disabled = 1;
}

/* Writes out the calling thread's buffer. */
static void flush_buffer(void) {
    if (buffer.len == 0)
        return;
    if (__atomic_load_n(&trace_fd, __ATOMIC_ACQUIRE) < 0) {
        pthread_mutex_lock(&open_lock);
        if (trace_fd < 0 && !disabled)
            open_trace_file();
        pthread_mutex_unlock(&open_lock);
    }
    if (trace_fd >= 0)
        write_all(trace_fd, buffer.records, buffer.len * sizeof(struct record));
    buffer.len = 0;
}

/* pthread key destructor: runs when a thread exits. Re-arming the key lets
 * records made by later destructors be flushed in the next round. */
static void on_thread_exit(void *value) {
    in_wrapper = 1;
    flush_buffer();
    pthread_setspecific(exit_key, value);
    in_wrapper = 0;
}

/* Around fork: flush, and hold open_lock so that the child does not inherit
 * it locked by a thread that does not exist there. */
static void fork_prepare(void) {
    in_wrapper = 1;
    flush_buffer();
    pthread_mutex_lock(&open_lock);
    in_wrapper = 0;
}

static void fork_parent(void) { pthread_mutex_unlock(&open_lock); }

static void fork_child(void) {
    buffer.len = 0;
    buffer.tid = 0;
    parent_pid = (uint32_t)getppid();
    fork_seq = __atomic_load_n(&next_seq, __ATOMIC_RELAXED);
    if (trace_fd >= 0)
        close(trace_fd);
    __atomic_store_n(&trace_fd, -1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&open_lock);
}

__attribute__((constructor)) static void trace_init(void) {
    in_wrapper = 1;
    read_trace_dir();
    if (pthread_key_create(&exit_key, on_thread_exit) == 0)
        exit_key_ready = 1;
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    in_wrapper = 0;
}

__attribute__((destructor)) static void trace_fini(void) {
    in_wrapper = 1;
    flush_buffer();
    in_wrapper = 0;
}

static uint64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static uint64_t take_seq(void) { return __atomic_fetch_add(&next_seq, 1, __ATOMIC_RELAXED); }

/* Appends one record (in_wrapper is set by the caller). */
static void record(uint64_t seq, uint32_t op, uint64_t arg0, uint64_t arg1, void *result) {
    if (buffer.tid == 0) {
        buffer.tid = (uint32_t)syscall(SYS_gettid);
    }
    if (!buffer.key_set && exit_key_ready) {
        buffer.key_set = 1;
        pthread_setspecific(exit_key, &buffer);
    }
    struct record *slot = &buffer.records[buffer.len++];
    slot->seq = seq;
    slot->time_ns = now_ns();
    slot->arg0 = arg0;
    slot->arg1 = arg1;
    slot->result = (uint64_t)(uintptr_t)result;
    slot->tid = buffer.tid;
    slot->op = op;
    if (buffer.len == BUFFER_RECORDS)
        flush_buffer();
}

/* Whether this call is recorded: not nested, and recording is on. */
#define SHOULD_RECORD() (!in_wrapper && !disabled)

void *malloc(size_t size) {
    if (!SHOULD_RECORD())
        return __libc_malloc(size);
    in_wrapper = 1;
    void *result = __libc_malloc(size);
    record(take_seq(), OP_MALLOC, size, 0, result);
    in_wrapper = 0;
    return result;
}

void free(void *ptr) {
    if (ptr == NULL || !SHOULD_RECORD()) {
        __libc_free(ptr);
        return;
    }
    in_wrapper = 1;
    uint64_t seq = take_seq();
    __libc_free(ptr);
    record(seq, OP_FREE, (uint64_t)(uintptr_t)ptr, 0, NULL);
    in_wrapper = 0;
}

void *calloc(size_t count, size_t size) {
    if (!SHOULD_RECORD())
        return __libc_calloc(count, size);
    in_wrapper = 1;
    void *result = __libc_calloc(count, size);
    record(take_seq(), OP_CALLOC, count, size, result);
    in_wrapper = 0;
    return result;
}

void *realloc(void *ptr, size_t size) {
    if (!SHOULD_RECORD())
        return __libc_realloc(ptr, size);
    in_wrapper = 1;
    uint64_t seq = take_seq();
    void *result = __libc_realloc(ptr, size);
    record(seq, OP_REALLOC, (uint64_t)(uintptr_t)ptr, size, result);
    in_wrapper = 0;
    return result;
}

void *reallocarray(void *ptr, size_t count, size_t size) {
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(ptr, bytes);
}

static void *aligned(uint32_t op, size_t alignment, size_t size) {
    if (!SHOULD_RECORD())
        return __libc_memalign(alignment, size);
    in_wrapper = 1;
    void *result = __libc_memalign(alignment, size);
    record(take_seq(), op, alignment, size, result);
    in_wrapper = 0;
    return result;
}

void *memalign(size_t alignment, size_t size) { return aligned(OP_MEMALIGN, alignment, size); }

void *aligned_alloc(size_t alignment, size_t size) { return aligned(OP_MEMALIGN, alignment, size); }

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    int saved = errno;
    void *result = aligned(OP_POSIX_MEMALIGN, alignment, size);
    if (result == NULL)
        return ENOMEM;
    errno = saved;
    *out = result;
    return 0;
}

static void *page_aligned(void *(*real)(size_t), size_t size) {
    if (!SHOULD_RECORD())
        return real(size);
    in_wrapper = 1;
    void *result = real(size);
    record(take_seq(), OP_VALLOC, (uint64_t)sysconf(_SC_PAGESIZE), size, result);
    in_wrapper = 0;
    return result;
}

void *valloc(size_t size) { return page_aligned(__libc_valloc, size); }

void *pvalloc(size_t size) { return page_aligned(__libc_pvalloc, size); }

size_t malloc_usable_size(void *ptr);

static size_t (*libc_usable_size)(void *);

/* glibc's malloc_usable_size, found in libc.so.6's own scope (a default or
 * RTLD_NEXT lookup could find this file's or another allocator's). */
static void resolve_libc_usable_size(void) {
    int nested = in_wrapper;
    in_wrapper = 1;
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (libc != NULL) {
        void *symbol = dlsym(libc, "malloc_usable_size");
        if (symbol != (void *)malloc_usable_size)
            __atomic_store_n(&libc_usable_size, (size_t(*)(void *))symbol, __ATOMIC_RELEASE);
        dlclose(libc);
    }
    in_wrapper = nested;
}

size_t malloc_usable_size(void *ptr) {
    if (ptr == NULL)
        return 0;
    if (__atomic_load_n(&libc_usable_size, __ATOMIC_ACQUIRE) == NULL)
        resolve_libc_usable_size();
    if (libc_usable_size == NULL) {
        say("alloc_trace: glibc's malloc_usable_size not found\n");
        abort();
    }
    return libc_usable_size(ptr);
}
