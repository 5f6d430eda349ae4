/* The program behind the 1 M-fault perf.data of `anonmm bench --only perfdata`:
 * maps N x 256 MiB of anonymous memory, writes it page by page (one page fault each), and
 * unmaps it. N = 4 makes 262,144 faults; N = 16 about 1 M.
 *
 *   cc -O2 -o /tmp/faults benches/faults_program.c
 *   anonmm record -o /tmp/big.data -- /tmp/faults 16
 *   anonmm bench --only perfdata --perf-data /tmp/big.data
 */
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 4;
	size_t len = 256UL << 20;
	for (long i = 0; i < n; i++) {
		volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 1;
		for (size_t off = 0; off < len; off += 4096)
			p[off] = 1;
		munmap((void *)p, len);
	}
	return 0;
}
