/* The program behind the text trace of issue 20's size for `anonmm bench --only text`:
 * 2.84 M page faults among 58,000 live VMAs. It maps one region of N chunks of 99 pages and
 * makes the last page of each chunk read-only (29,000 mprotects: 58,000 VMAs), then writes
 * every writable page (one page fault each), giving a chunk's memory back with
 * MADV_DONTNEED once WINDOW chunks after it were written (as an allocator returning freed
 * memory does), and unmaps the region.
 *
 *   cc -O2 -o /tmp/vmas benches/vmas_program.c
 *   anonmm record --text -o /tmp/vmas58k.perf.txt.zst -- /tmp/vmas 29000
 *   anonmm bench --only text --trace /tmp/vmas58k.perf.txt.zst
 */
#include <stdlib.h>
#include <sys/mman.h>

#define CHUNK 99 /* pages: 98 written, 1 read-only */
#define WINDOW 1024

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	size_t page = 4096, chunk = CHUNK * page;
	char *p = mmap(NULL, n * chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	for (long i = 0; i < n; i++)
		if (mprotect(p + i * chunk + (CHUNK - 1) * page, page, PROT_READ))
			return 1;
	for (long i = 0; i < n; i++) {
		volatile char *c = p + i * chunk;
		for (size_t off = 0; off < (CHUNK - 1) * page; off += page)
			c[off] = 1;
		if (i >= WINDOW)
			madvise(p + (i - WINDOW) * chunk, (CHUNK - 1) * page, MADV_DONTNEED);
	}
	munmap(p, n * chunk);
	return 0;
}
