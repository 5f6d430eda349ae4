/* The VMA round of anonmm bench (src/bench.rs: many_vmas, vma_round) on the running kernel, for
 * comparison with the model: 100,000 separate 4-page anonymous VMAs one page apart, each with a
 * written page, then rounds of eight calls on a random one (mprotect split and merge back, munmap
 * and mmap merging three ways, mremap shrink and grow in place, mremap move away and back).
 *
 *   gcc -O2 -o /tmp/kernel_vma_round benches/kernel_vma_round.c
 *   sysctl -w vm.max_map_count=300000   # 100,000 VMAs need more than the default 65530
 *   /tmp/kernel_vma_round 100000 100000
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <stdint.h>
#define PG 4096UL
int main(int argc, char **argv) {
    long live = argc > 1 ? atol(argv[1]) : 100000, rounds = argc > 2 ? atol(argv[2]) : 100000;
    uintptr_t base = 1UL << 34, spare = 1UL << 40;
    for (long i = 0; i < live; i++) {
        char *p = mmap((void *)(base + i * 5 * PG), 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        p[0] = 1;
    }
    srand(1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long r = 0; r < rounds; r++) {
        long i = rand() % live;
        char *a = (char *)(base + i * 5 * PG);
        if (mprotect(a + PG, PG, PROT_READ)) { perror("mprotect"); return 1; }
        if (mprotect(a + PG, PG, PROT_READ | PROT_WRITE)) { perror("mprotect2"); return 1; }
        if (munmap(a + 2 * PG, PG)) { perror("munmap"); return 1; }
        if (mmap(a + 2 * PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) { perror("mmap2"); return 1; }
        if (mremap(a, 4 * PG, 3 * PG, 0) == MAP_FAILED) { perror("shrink"); return 1; }
        if (mremap(a, 3 * PG, 4 * PG, 0) == MAP_FAILED) { perror("grow"); return 1; }
        if (mremap(a, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)spare) == MAP_FAILED) { perror("move"); return 1; }
        if (mremap((void *)spare, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, a) == MAP_FAILED) { perror("back"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("kernel: %ld calls in %.3f s: %.0f calls/s\n", rounds * 8, s, rounds * 8 / s);
    return 0;
}
