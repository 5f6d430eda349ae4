// SPDX-License-Identifier: GPL-2.0
/*
 * anonmm_inspect: the kernel's own rmap state of one process, for anonmm's VM oracle.
 *
 * /proc/anonmm_inspect: write "PID START END" (decimal pid, hex addresses), then read.
 * For every VMA of PID that intersects [START, END), in address order:
 *
 *   vma START END PGOFF FLAGS ANON_VMA CHAINS
 *   av ANON_VMA ROOT PARENT REFCOUNT NUM_CHILDREN NUM_ACTIVE_VMAS   (if ANON_VMA != 0)
 *   pg ADDR INDEX MAPPING KIND ORDER MAPCOUNT                       (per present page)
 *
 * all numbers hex. KIND: a (anon: MAPPING is the anon_vma), f (file: the address_space),
 * k (KSM or movable), n (NULL mapping: the zero pages). INDEX is the page's own index
 * (folio->index + its number in the folio). MAPCOUNT is page_mapcount(): the page's
 * _mapcount + 1, plus the folio's entire (PMD) mapcount for a large folio (6.1's
 * __page_mapcount, which also takes PageDoubleMap's offset out).
 *
 * Locks, as the kernel takes them to read these fields:
 *   mmap_read_lock(mm)            the VMA tree, vm_start/vm_end/vm_pgoff/vm_flags;
 *   mm->page_table_lock           vma->anon_vma and vma->anon_vma_chain (__anon_vma_prepare
 *                                 sets both under it with only mmap_read_lock held);
 *   anon_vma_lock_read(anon_vma)  root->rwsem: root, parent, num_children, num_active_vmas
 *                                 (anon_vma_clone/fork/unlink change them under it);
 *   pmd_lock / pte lock           each page table while it is walked (rcu_read_lock too:
 *                                 page tables may be freed by RCU).
 * No allocation happens under a lock: the text goes to a buffer sized before the walk; if
 * it does not fit, the walk is redone with a bigger one.
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/rmap.h>
#include <linux/pgtable.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/uaccess.h>
#include <linux/huge_mm.h>
#include <linux/version.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("anonmm oracle: a process's VMAs, anon_vmas and folios as the kernel keeps them");

struct dump {
	char *buf;
	size_t len, cap;
	bool full;
};

static __printf(2, 3) void out(struct dump *d, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (d->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(d->buf + d->len, d->cap - d->len, fmt, ap);
	va_end(ap);
	if (n >= d->cap - d->len)
		d->full = true;
	else
		d->len += n;
}

static void page_line(struct dump *d, unsigned long addr, struct page *page)
{
	struct folio *folio = page_folio(page);
	unsigned long mapping = (unsigned long)READ_ONCE(folio->mapping);
	unsigned long nr = folio_page_idx(folio, page);
	int mapcount;
	char kind;

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
	/* 6.1: __page_mapcount takes PageDoubleMap's offset of the subpages out. */
	mapcount = page_mapcount(page);
#else
	mapcount = atomic_read(&page->_mapcount) + 1;
	if (folio_test_large(folio))
		mapcount += folio_entire_mapcount(folio);
#endif
	if (!mapping)
		kind = 'n';
	else if ((mapping & PAGE_MAPPING_FLAGS) == PAGE_MAPPING_ANON)
		kind = 'a';
	else if (mapping & PAGE_MAPPING_FLAGS)
		kind = 'k';
	else
		kind = 'f';
	/* The zero pages (the huge zero folio here) have no meaningful index. */
	out(d, "pg %lx %lx %lx %c %x %x\n", addr, mapping ? folio->index + nr : 0,
	    mapping & ~PAGE_MAPPING_FLAGS, kind, folio_order(folio), mapcount);
}

/* The page tables of [start, end) inside one VMA, under each table's lock. */
static void walk_range(struct dump *d, struct mm_struct *mm, unsigned long start, unsigned long end)
{
	unsigned long addr = start, next;

	while (addr < end) {
		pgd_t *pgd;
		p4d_t *p4d;
		pud_t *pud;
		pmd_t *pmd, pmdval;
		spinlock_t *ptl;
		pte_t *pte;

		next = pmd_addr_end(addr, end);
		pgd = pgd_offset(mm, addr);
		if (pgd_none(*pgd) || pgd_bad(*pgd)) {
			addr = pgd_addr_end(addr, end);
			continue;
		}
		p4d = p4d_offset(pgd, addr);
		if (p4d_none(*p4d) || p4d_bad(*p4d)) {
			addr = p4d_addr_end(addr, end);
			continue;
		}
		pud = pud_offset(p4d, addr);
		if (pud_none(*pud) || !pud_present(*pud) || pud_leaf(*pud)) {
			addr = pud_addr_end(addr, end);
			continue;
		}
		pmd = pmd_offset(pud, addr);
		ptl = pmd_lock(mm, pmd);
		pmdval = *pmd;
		if (pmd_trans_huge(pmdval) || pmd_devmap(pmdval)) {
			struct page *head = pmd_page(pmdval);
			unsigned long a;

			for (a = addr; a < next; a += PAGE_SIZE)
				page_line(d, a, head + ((a & ~PMD_MASK) >> PAGE_SHIFT));
			spin_unlock(ptl);
			addr = next;
			continue;
		}
		spin_unlock(ptl);
		if (pmd_none(pmdval) || !pmd_present(pmdval) || pmd_bad(pmdval)) {
			addr = next;
			continue;
		}
		rcu_read_lock();
		ptl = pte_lockptr(mm, pmd);
		spin_lock(ptl);
		/* The table can have gone (khugepaged) between the read and the lock. */
		if (pmd_same(pmdval, READ_ONCE(*pmd))) {
			pte = pte_offset_kernel(pmd, addr);
			for (; addr < next; addr += PAGE_SIZE, pte++) {
				pte_t p = ptep_get(pte);
				unsigned long pfn;

				if (!pte_present(p))
					continue;
				pfn = pte_pfn(p);
				if (is_zero_pfn(pfn) || !pfn_valid(pfn)) {
					out(d, "pg %lx 0 0 n 0 0\n", addr);
					continue;
				}
				page_line(d, addr, pfn_to_page(pfn));
			}
		}
		spin_unlock(ptl);
		rcu_read_unlock();
		addr = next;
	}
}

static void dump_anon_vma(struct dump *d, struct anon_vma *av)
{
	anon_vma_lock_read(av);
	out(d, "av %lx %lx %lx %x %lx %lx\n", (unsigned long)av, (unsigned long)av->root,
	    (unsigned long)av->parent, atomic_read(&av->refcount), av->num_children, av->num_active_vmas);
	anon_vma_unlock_read(av);
}

static int inspect_mm(struct dump *d, struct mm_struct *mm, unsigned long start, unsigned long end)
{
	struct vm_area_struct *vma;
	unsigned long addr = start;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	while ((vma = find_vma(mm, addr)) && vma->vm_start < end) {
		struct anon_vma *av;
		struct anon_vma_chain *avc;
		unsigned long chains = 0;

		spin_lock(&mm->page_table_lock);
		av = vma->anon_vma;
		list_for_each_entry(avc, &vma->anon_vma_chain, same_vma)
			chains++;
		spin_unlock(&mm->page_table_lock);
		out(d, "vma %lx %lx %lx %lx %lx %lx\n", vma->vm_start, vma->vm_end, vma->vm_pgoff,
		    (unsigned long)vma->vm_flags, (unsigned long)av, chains);
		if (av)
			dump_anon_vma(d, av);
		walk_range(d, mm, max(vma->vm_start, start), min(vma->vm_end, end));
		addr = vma->vm_end;
		if (d->full)
			break;
	}
	mmap_read_unlock(mm);
	return 0;
}

static int inspect(struct dump *d, pid_t nr, unsigned long start, unsigned long end)
{
	struct pid *pid = find_get_pid(nr);
	struct task_struct *task;
	struct mm_struct *mm;
	int err;

	if (!pid)
		return -ESRCH;
	task = get_pid_task(pid, PIDTYPE_PID);
	put_pid(pid);
	if (!task)
		return -ESRCH;
	mm = get_task_mm(task);
	put_task_struct(task);
	if (!mm)
		return -EINVAL;
	for (d->cap = 1 << 20;; d->cap *= 4) {
		d->buf = kvmalloc(d->cap, GFP_KERNEL);
		if (!d->buf) {
			err = -ENOMEM;
			break;
		}
		d->len = 0;
		d->full = false;
		err = inspect_mm(d, mm, start, end);
		if (err || !d->full)
			break;
		kvfree(d->buf);
		d->buf = NULL;
		if (d->cap >= (256 << 20)) {
			err = -EFBIG;
			break;
		}
	}
	mmput(mm);
	return err;
}

static int inspect_open(struct inode *inode, struct file *file)
{
	struct dump *d = kzalloc(sizeof(*d), GFP_KERNEL);

	if (!d)
		return -ENOMEM;
	file->private_data = d;
	return 0;
}

static ssize_t inspect_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	struct dump *d = file->private_data;
	char req[96];
	unsigned long start, end;
	int nr, err;

	if (count >= sizeof(req))
		return -EINVAL;
	if (copy_from_user(req, ubuf, count))
		return -EFAULT;
	req[count] = 0;
	if (sscanf(req, "%d %lx %lx", &nr, &start, &end) != 3 || start >= end)
		return -EINVAL;
	kvfree(d->buf);
	d->buf = NULL;
	d->len = 0;
	err = inspect(d, nr, start, end);
	return err ? err : count;
}

static ssize_t inspect_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct dump *d = file->private_data;

	if (!d->buf)
		return -ENODATA;
	return simple_read_from_buffer(ubuf, count, ppos, d->buf, d->len);
}

static int inspect_release(struct inode *inode, struct file *file)
{
	struct dump *d = file->private_data;

	kvfree(d->buf);
	kfree(d);
	return 0;
}

static const struct proc_ops inspect_ops = {
	.proc_open = inspect_open,
	.proc_write = inspect_write,
	.proc_read = inspect_read,
	.proc_lseek = default_llseek,
	.proc_release = inspect_release,
};

static int __init inspect_init(void)
{
	return proc_create("anonmm_inspect", 0600, NULL, &inspect_ops) ? 0 : -ENOMEM;
}

static void __exit inspect_exit(void)
{
	remove_proc_entry("anonmm_inspect", NULL);
}

module_init(inspect_init);
module_exit(inspect_exit);
