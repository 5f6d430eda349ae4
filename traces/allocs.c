/* An allocation-heavy program for recording allocators' habits: 600 rounds over 64 slots,
 * each round allocating, growing (realloc) or freeing a block of 1 KiB..4 MiB and writing it.
 * Deterministic (a fixed LCG). Build: gcc -O2 -o /tmp/allocs traces/allocs.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static unsigned long long s = 42;
static unsigned long rnd(void) { s = s * 6364136223846793005ULL + 1442695040888963407ULL; return s >> 33; }
int main(void) {
	enum { SLOTS = 64, ROUNDS = 600 };
	static char *p[SLOTS];
	static size_t n[SLOTS];
	unsigned long sum = 0;
	for (int r = 0; r < ROUNDS; r++) {
		int i = rnd() % SLOTS;
		unsigned long op = rnd() % 10;
		if (!p[i] || op < 5) {
			size_t want = n[i] ? n[i] + (rnd() % (n[i] + 1)) : (1024UL << (rnd() % 12));
			if (want > (4UL << 20))
				want = 4UL << 20;
			char *q = realloc(p[i], want);
			if (!q)
				return 1;
			memset(q + n[i], r, want - n[i]);
			p[i] = q;
			n[i] = want;
		} else if (op < 8) {
			free(p[i]);
			p[i] = NULL;
			n[i] = 0;
		} else {
			sum += p[i][rnd() % n[i]];
		}
	}
	printf("%lu\n", sum);
	return 0;
}
