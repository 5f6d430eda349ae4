/* Regression program for anonmm's trace import (issue 18): each block exercises one quirk. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

int main(void)
{
	/* An fd the trace cannot see: pipe() is not recorded. */
	int p[2];
	if (pipe(p))
		return 1;
	int a = open("/etc/hostname", O_RDONLY);
	int b = open("/etc/passwd", O_RDONLY);
	/* mmap's fd is an int: junk in the upper 32 bits is ignored by the kernel. */
	long m = syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE, (long)b | (0x5a5aL << 32), 0);
	if (m == -1)
		return 2;
	char *x = (char *)m;
	volatile char c = x[0];
	(void)c;
	/* MREMAP_DONTUNMAP without MREMAP_FIXED: the kernel picks the new address. */
	char *q = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	q[0] = 1;
	q[4096] = 2;
	char *r = mremap(q, 2 * 4096, 2 * 4096, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, (void *)0);
	if (r == MAP_FAILED)
		return 3;
	r[0] = 3;
	q[0] = 4;
	close(a);
	close(b);
	int d = open("/etc/hostname", O_RDONLY);
	close(d);
	close(p[0]);
	close(p[1]);
	/* An exec with more than 4 KiB of arguments: the kernel's temporary exec stack grows
	 * (expand_downwards) and perf shows it as a mapping record of the new program. */
	static char big[6000];
	memset(big, 'a', sizeof(big) - 1);
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = { "true", big, 0 };
		execv("/bin/true", argv);
		_exit(127);
	}
	int st;
	waitpid(pid, &st, 0);
	return 0;
}
