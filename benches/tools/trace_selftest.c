/*
 * trace_selftest.c: a program with a known allocation pattern, run under
 * alloc_trace.c by benches/tests/tracer.rs to check the logger end to end.
 *
 * - 1000 blocks of 24 + i bytes allocated on the main thread; a second
 *   thread frees the even ones, the main thread the odd ones (remote frees);
 * - one of each other call: calloc, realloc (NULL, grow, to 0),
 *   posix_memalign, aligned_alloc, memalign, valloc, reallocarray, and
 *   malloc_usable_size (forwarded to glibc's);
 * - a marker block of 777777 bytes, allocated and freed last.
 *
 * Built with -O0 -fno-builtin: the compiler may otherwise drop a malloc
 * whose block is freed unused.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS 1000

static void *blocks[BLOCKS];

static void *free_even(void *unused) {
    (void)unused;
    for (int i = 0; i < BLOCKS; i += 2)
        free(blocks[i]);
    return NULL;
}

int main(void) {
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(24 + (size_t)i);
        memset(blocks[i], 1, 24 + (size_t)i);
    }
    if (malloc_usable_size(blocks[0]) < 24)
        return 2;
    pthread_t thread;
    if (pthread_create(&thread, NULL, free_even, NULL) != 0)
        return 1;
    for (int i = 1; i < BLOCKS; i += 2)
        free(blocks[i]);
    pthread_join(thread, NULL);

    free(calloc(10, 100));
    char *grown = realloc(NULL, 50);
    grown = realloc(grown, 5000);
    grown = realloc(grown, 0);
    free(grown);
    void *aligned = NULL;
    if (posix_memalign(&aligned, 64, 300) != 0)
        return 1;
    free(aligned);
    free(aligned_alloc(128, 256));
    free(memalign(4096, 100));
    free(valloc(10));
    free(reallocarray(NULL, 3, 40));

    char *marker = malloc(777777);
    marker[0] = 1;
    free(marker);
    puts("selftest done");
    return 0;
}
