//! A small in-model file system: inodes with a page cache, open files (`struct file`, whose
//! identity is what VMA merging compares), shmem objects for shared anonymous memory, and
//! the descriptor calls (openat, close, dup, dup2, ftruncate).

use std::collections::BTreeMap;

use crate::abi;
use crate::arena::{Arena, arena_id};
use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, Mapping};
use crate::mm::System;
use crate::pagetable::Pte;
use crate::types::{PAGE_SHIFT, PAGE_SIZE, PgOff, Pid, page_align};

arena_id!(
    /// An open file description (`struct file`).
    FileId
);
arena_id!(
    /// An inode.
    InodeId
);
arena_id!(
    /// A descriptor table (`struct files_struct`).
    FilesId
);

/// A descriptor table (`struct files_struct`): open files by descriptor number. Threads
/// made with `CLONE_FILES` share one (`copy_files`); fork copies it (`dup_fd`).
#[derive(Clone, Debug, Default)]
pub struct FdTable {
    /// Open files by descriptor number.
    pub fds: BTreeMap<i64, FileId>,
    /// Which of descriptors 0, 1 and 2 (bits 0–2) still hold the stdio every process
    /// starts with. What they are (a terminal, a pipe, /dev/null) is outside the model: close
    /// frees them and `dup2` over them replaces them, anything else on them is not modelled.
    pub stdio: u8,
    /// Tasks using the table (`files_struct.count`).
    pub users: u32,
}

impl FdTable {
    /// Whether `fd` is one of 0–2 and still holds stdio.
    fn stdio_open(&self, fd: i64) -> bool {
        (0..3).contains(&fd) && self.stdio & (1 << fd) != 0
    }
}

/// Descriptors 0–2 all open: a new process's table.
pub const STDIO_ALL: u8 = 0b111;

/// What an inode is: a named regular file or an anonymous shmem object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InodeKind {
    /// A regular file, by the path the script named it.
    Regular {
        /// The name, the key in [`Fs::names`].
        path: String,
    },
    /// The shmem object behind a shared anonymous mapping (`shmem_zero_setup`).
    Shmem,
}

/// An inode (`struct inode` with its `address_space`).
#[derive(Clone, Debug)]
pub struct Inode {
    /// Regular file or shmem.
    pub kind: InodeKind,
    /// The number `/proc/pid/maps` shows (in creation order, per kind).
    pub ino: u64,
    /// `i_size` in bytes: pages at or beyond it raise SIGBUS when touched through a mapping.
    pub size: u64,
    /// The page cache: page offset to folio.
    pub cache: BTreeMap<u64, FolioId>,
    /// Open files referring to it (a regular file also lives on by its name).
    pub refs: u32,
}

/// An open file description (`struct file`): what descriptors and VMAs point at.
#[derive(Clone, Debug)]
pub struct OpenFile {
    /// The file's inode (`f_inode`).
    pub inode: InodeId,
    /// Opened for reading (`FMODE_READ`): required by every file mmap (else EACCES).
    pub readable: bool,
    /// Opened for writing (`FMODE_WRITE`): required by ftruncate and by a writable shared mmap.
    pub writable: bool,
    /// Descriptors and VMAs holding it (`f_count`).
    pub refs: u32,
    /// `f_ra`: the last read-ahead window (start, size, async size), once there was one.
    pub ra: Option<(u64, u64, u64)>,
}

/// The file system: every inode and open file, and the namespace.
#[derive(Clone, Debug, Default)]
pub struct Fs {
    /// Every live inode.
    pub inodes: Arena<InodeId, Inode>,
    /// Every open file description.
    pub files: Arena<FileId, OpenFile>,
    /// The flat namespace: path to regular-file inode (no directories; files are never unlinked).
    pub names: BTreeMap<String, InodeId>,
    /// Every descriptor table.
    pub tables: Arena<FilesId, FdTable>,
    next_ino: u64,
    next_shmem_ino: u64,
}

impl Fs {
    /// A new shmem object of `size` bytes and a file open on it.
    pub fn new_shmem(&mut self, size: u64) -> FileId {
        self.next_shmem_ino += 1;
        let inode = self.inodes.alloc(Inode {
            kind: InodeKind::Shmem,
            ino: self.next_shmem_ino,
            size,
            cache: BTreeMap::new(),
            refs: 1,
        });
        self.files.alloc(OpenFile { inode, readable: true, writable: true, refs: 1, ra: None })
    }
    /// The inode's size in pages, rounded up: the first page offset beyond EOF.
    pub fn size_pages(&self, inode: InodeId) -> u64 {
        page_align(self.inodes[inode].size).unwrap_or(u64::MAX) >> PAGE_SHIFT
    }
}

impl System {
    /// `fput`: drop a reference to an open file; the last one closes it, and the last
    /// reference to a shmem inode frees it and its pages.
    pub fn fput(&mut self, f: FileId) {
        let file = &mut self.fs.files[f];
        file.refs -= 1;
        if file.refs > 0 {
            return;
        }
        let inode = self.fs.files.free(f).inode;
        let ino = &mut self.fs.inodes[inode];
        ino.refs -= 1;
        if ino.refs == 0 {
            let ino = self.fs.inodes.free(inode);
            for (_, folio) in ino.cache {
                self.mem.page_cache_release(&mut self.trace, folio);
            }
        }
    }

    /// Drop a task's use of a descriptor table; the last user closes every descriptor
    /// (`put_files_struct`).
    pub(crate) fn put_files(&mut self, t: FilesId) {
        self.fs.tables[t].users -= 1;
        if self.fs.tables[t].users == 0 {
            for f in self.fs.tables.free(t).fds.into_values() {
                self.fput(f);
            }
        }
    }

    /// A call on an inherited stdio descriptor, whose file the model does not know: not
    /// modelled (the run stops; the error returned is never shown).
    pub(crate) fn refuse_stdio(&mut self, pid: Pid, fd: i64, call: &str) -> KResult<()> {
        if self.fs.is_stdio(&self.vm, pid, fd) {
            self.not_modelled(&format!(
                "{call} of inherited stdio descriptor {fd} (what it is lies outside the model)"
            ));
            return Err(Errno::EBADF);
        }
        Ok(())
    }

    /// The open file behind `fd` (EBADF if none; ESRCH for an unknown pid).
    pub fn file_of_fd(&self, pid: Pid, fd: i64) -> KResult<FileId> {
        self.fs.fd_file(&self.vm, pid, fd)
    }

    /// `openat` on the model's flat namespace. Descriptors 0–2 hold stdio while open (as
    /// in any process, so the first file gets 3); a closed one is the lowest free again.
    pub fn sys_openat(&mut self, pid: Pid, path: &str, flags: u64) -> KResult<i64> {
        if !self.vm.procs.contains_key(&pid) {
            return Err(Errno::ESRCH);
        }
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let inode = match self.fs.names.get(path) {
            Some(&i) => {
                if flags & abi::O_CREAT != 0 && flags & abi::O_EXCL != 0 {
                    return Err(Errno::EEXIST);
                }
                i
            }
            None => {
                if flags & abi::O_CREAT == 0 {
                    return Err(Errno::ENOENT);
                }
                self.fs.next_ino += 1;
                let i = self.fs.inodes.alloc(Inode {
                    kind: InodeKind::Regular { path: path.to_string() },
                    ino: self.fs.next_ino,
                    size: 0,
                    cache: BTreeMap::new(),
                    refs: 1, // the name
                });
                self.fs.names.insert(path.to_string(), i);
                i
            }
        };
        let acc = flags & abi::O_ACCMODE;
        let file = self.fs.files.alloc(OpenFile {
            inode,
            readable: acc == abi::O_RDONLY || acc == abi::O_RDWR,
            writable: acc == abi::O_WRONLY || acc == abi::O_RDWR,
            refs: 1,
            ra: None,
        });
        self.fs.inodes[inode].refs += 1;
        if flags & abi::O_TRUNC != 0 && self.fs.files[file].writable {
            self.truncate_inode(inode, 0);
        }
        match self.fs.install_fd(&self.vm, pid, file, 0) {
            Ok(fd) => Ok(fd),
            Err(e) => {
                self.fput(file);
                Err(e)
            }
        }
    }

    /// close(2).
    pub fn sys_close(&mut self, pid: Pid, fd: i64) -> KResult<u64> {
        if self.fs.is_stdio(&self.vm, pid, fd) {
            self.fs.clear_stdio(&self.vm, pid, fd);
            return Ok(0);
        }
        let file = self.fs.fd_file(&self.vm, pid, fd)?;
        self.fs.fds_mut(&self.vm, pid)?.remove(&fd);
        self.fput(file);
        Ok(0)
    }

    /// dup(2): the lowest free descriptor (stdio's while open: see `openat`), sharing the
    /// open file.
    pub fn sys_dup(&mut self, pid: Pid, fd: i64) -> KResult<i64> {
        self.refuse_stdio(pid, fd, "dup")?;
        let file = self.fs.fd_file(&self.vm, pid, fd)?;
        let nfd = self.fs.install_fd(&self.vm, pid, file, 0)?;
        self.fs.files[file].refs += 1;
        Ok(nfd)
    }

    /// dup2(2): `new` (below 1024) now names `old`'s open file; a file it named is put first.
    pub fn sys_dup2(&mut self, pid: Pid, old: i64, new: i64) -> KResult<i64> {
        self.refuse_stdio(pid, old, "dup2")?;
        let file = self.fs.fd_file(&self.vm, pid, old)?;
        if !(0..1024).contains(&new) {
            return Err(Errno::EBADF);
        }
        if old == new {
            return Ok(new);
        }
        // Over stdio: the inherited file is closed.
        self.fs.clear_stdio(&self.vm, pid, new);
        if let Ok(prev) = self.fs.fd_file(&self.vm, pid, new) {
            self.fput(prev);
        }
        self.fs.files[file].refs += 1;
        self.fs.fds_mut(&self.vm, pid)?.insert(new, file);
        Ok(new)
    }

    /// ftruncate(2): EINVAL unless the file is open for writing (see [`System::truncate_inode`]).
    pub fn sys_ftruncate(&mut self, pid: Pid, fd: i64, len: u64) -> KResult<u64> {
        self.refuse_stdio(pid, fd, "ftruncate")?;
        let file = self.fs.fd_file(&self.vm, pid, fd)?;
        if (len as i64) < 0 {
            return Err(Errno::EINVAL);
        }
        if !self.fs.files[file].writable {
            return Err(Errno::EINVAL);
        }
        let inode = self.fs.files[file].inode;
        self.truncate_inode(inode, len);
        Ok(0)
    }

    /// Set a file's size (`ext4_setattr`, or `shmem_setattr`). Shrinking unmaps every page
    /// beyond it from every mapping, private COW copies included (`truncate_pagecache` →
    /// `unmap_mapping_range(.., even_cows=1)`), and drops those pages from the page cache;
    /// the page holding the new EOF, if cached, is zeroed past it
    /// (`truncate_inode_partial_folio`, or `shmem_undo_range`'s), even when the size does not
    /// change.
    ///
    /// ext4 then zeroes the rest of the block holding EOF: the new EOF when the size did not
    /// grow (`ext4_truncate` → `ext4_block_truncate_page`), the old one when it grew
    /// (`ext4_setattr` → `ext4_block_truncate_page(oldsize)`, from 6.13:
    /// [`Profile::ext4_truncate_up_zeroes_eof`](crate::kernel::Profile)), in both cases only
    /// when that EOF is inside a block (4 KiB blocks: inside a page). Bytes written through a
    /// shared mapping past the old EOF are so lost on a truncate up. The zeroing takes the
    /// block's page-cache folio, creating it if absent (`__filemap_get_folio` with
    /// `FGP_CREAT`); for a hole (a block never written: the model's files only get data from
    /// pages that stay cached) it returns at once, leaving a new folio not up to date, which
    /// fault-around and read-ahead then pass by.
    pub fn truncate_inode(&mut self, inode: InodeId, size: u64) {
        let old = self.fs.inodes[inode].size;
        self.fs.inodes[inode].size = size;
        if size <= old {
            if size < old {
                self.truncate_pagecache(inode, size);
            }
            self.mem.zero_cached_tail(&self.fs, inode, size);
        }
        if matches!(self.fs.inodes[inode].kind, InodeKind::Regular { .. }) {
            let eof = if size > old {
                if !self.cfg.kernel.profile().ext4_truncate_up_zeroes_eof {
                    // `pagecache_isize_extended` returns at once with 4 KiB blocks.
                    return;
                }
                old
            } else {
                size
            };
            if eof % PAGE_SIZE != 0 {
                self.ext4_block_truncate_page(inode, eof);
            }
        }
    }

    /// `truncate_pagecache`: unmap everything from `size` on, COW copies included, and drop
    /// the page cache there.
    fn truncate_pagecache(&mut self, inode: InodeId, size: u64) {
        let first = page_align(size).unwrap_or(u64::MAX) >> PAGE_SHIFT;
        self.unmap_mapping_pages(inode, first, u64::MAX, true);
        let gone: Vec<(u64, FolioId)> =
            self.fs.inodes[inode].cache.range(first..).map(|(k, v)| (*k, *v)).collect();
        for (pgoff, folio) in gone {
            self.fs.inodes[inode].cache.remove(&pgoff);
            self.mem.page_cache_release(&mut self.trace, folio);
        }
    }

    /// `unmap_mapping_pages(mapping, first, last - first, even_cows)`: unmap pages
    /// `[first, last)` of the file from every VMA mapping it. Without `even_cows` only the
    /// page-cache pages go: the anonymous COW copies of private mappings stay
    /// (`zap_details.even_cows`, `should_zap_folio`).
    fn unmap_mapping_pages(&mut self, inode: InodeId, first: u64, last: u64, even_cows: bool) {
        let vmas: Vec<_> = self
            .vm
            .vmas
            .iter()
            .filter(|(_, v)| v.file.is_some_and(|f| self.fs.files[f].inode == inode))
            .map(|(id, _)| id)
            .collect();
        for id in vmas {
            let v = &self.vm.vmas[id];
            let from = first.max(v.pgoff.0);
            let to = last.min(v.pgoff.0.saturating_add(v.pages()));
            if from >= to {
                continue;
            }
            let (mm, start, end) = (
                v.mm,
                v.start.plus((from - v.pgoff.0) << PAGE_SHIFT),
                v.start.plus((to - v.pgoff.0) << PAGE_SHIFT),
            );
            if even_cows {
                self.zap_range(mm, start, end);
                continue;
            }
            self.vm.split_huge_pmds_partial(&mut self.mem, &mut self.trace, mm, start, end);
            for (a, pte) in self.vm.mms[mm].pt.ptes_in(start, end) {
                if let Pte::Present { folio, .. } = pte
                    && matches!(self.mem.folios[folio].mapping, Mapping::File(i) if i == inode)
                {
                    self.vm.mms[mm].pt.set_pte(a, Pte::None);
                    // zap_present_ptes → folio_remove_rmap_ptes → munlock_vma_folio.
                    self.mem.munlock_vma_folio(&self.vm, folio, id);
                    self.mem.drop_pte(&mut self.swap, &mut self.trace, mm, pte);
                }
            }
        }
    }

    /// `ext4_block_truncate_page(pos)` → `__ext4_block_zero_page_range`, on a file whose
    /// blocks outside the page cache are holes: a folio cached there is zeroed from `pos` to
    /// the block's end (a block written through a shared mapping is allocated, or delayed,
    /// so mapped; a hole's cached page holds zeroes anyway); else a folio is created and
    /// left not up to date.
    fn ext4_block_truncate_page(&mut self, inode: InodeId, pos: u64) {
        let index = pos >> PAGE_SHIFT;
        if self.fs.inodes[inode].cache.contains_key(&index) {
            self.mem.zero_cached_tail(&self.fs, inode, pos);
            return;
        }
        let f = self.mem.folio_alloc(&mut self.trace, 0);
        let fo = &mut self.mem.folios[f];
        fo.mapping = Mapping::File(inode);
        fo.index = PgOff(index);
        fo.extra_refs = 1;
        fo.not_uptodate = true;
        self.fs.inodes[inode].cache.insert(index, f);
    }

    /// `vfs_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)` of whole pages
    /// `[first, last)`: `ext4_punch_hole` (nothing at or beyond EOF; the hole ends at EOF's
    /// page) or `shmem_fallocate`. The pages are unmapped from every mapping, COW copies kept
    /// (`truncate_pagecache_range` → `unmap_mapping_range(.., even_cows=0)`), and dropped from
    /// the page cache; a later fault reads zeroes.
    pub fn punch_hole(&mut self, inode: InodeId, first: u64, last: u64) {
        let last = match self.fs.inodes[inode].kind {
            InodeKind::Regular { .. } => {
                let eof = self.fs.size_pages(inode);
                if first >= eof {
                    return;
                }
                last.min(eof)
            }
            InodeKind::Shmem => last,
        };
        self.unmap_mapping_pages(inode, first, last, false);
        let gone: Vec<(u64, FolioId)> =
            self.fs.inodes[inode].cache.range(first..last).map(|(k, v)| (*k, *v)).collect();
        for (pgoff, folio) in gone {
            self.fs.inodes[inode].cache.remove(&pgoff);
            self.mem.page_cache_release(&mut self.trace, folio);
        }
    }
}

impl Fs {
    /// A new descriptor table holding a copy of `from`'s descriptors (`dup_fd`): every
    /// open file gains a reference.
    pub(crate) fn dup_fd(&mut self, from: FilesId) -> FilesId {
        let fds = self.tables[from].fds.clone();
        for &f in fds.values() {
            self.files[f].refs += 1;
        }
        let stdio = self.tables[from].stdio;
        self.tables.alloc(FdTable { fds, stdio, users: 1 })
    }

    /// Open a file read-only for an exec-time mapping, creating it (at least `size` bytes)
    /// if the model has not seen it.
    pub fn open_for_exec(&mut self, path: &str, size: u64) -> FileId {
        let inode = match self.names.get(path) {
            Some(&i) => i,
            None => {
                self.next_ino += 1;
                let i = self.inodes.alloc(Inode {
                    kind: InodeKind::Regular { path: path.to_string() },
                    ino: self.next_ino,
                    size,
                    cache: BTreeMap::new(),
                    refs: 1,
                });
                self.names.insert(path.to_string(), i);
                i
            }
        };
        self.inodes[inode].refs += 1;
        self.files.alloc(OpenFile { inode, readable: true, writable: false, refs: 1, ra: None })
    }
}

/// A page's tag after `folio_zero_range` from byte `off` of the page on: the tag is a
/// little-endian u64 at the page's start, so its bytes from `off` on become zero.
pub fn zero_tag_from(tag: u64, off: u64) -> u64 {
    if off >= 8 { tag } else { tag & ((1u64 << (8 * off)) - 1) }
}

impl crate::folio::FolioStore {
    /// `folio_zero_range` of the cached page holding byte `pos` of the file, from `pos` to
    /// the page's end. The model keeps a page's contents as the tag at its start (a
    /// little-endian u64), so only a `pos` inside those 8 bytes changes what it holds.
    fn zero_cached_tail(&mut self, fs: &Fs, inode: InodeId, pos: u64) {
        let off = pos % PAGE_SIZE;
        if off == 0 {
            return;
        }
        if let Some(&f) = fs.inodes[inode].cache.get(&(pos >> PAGE_SHIFT)) {
            let page = &mut self.folios[f].pages[0];
            page.tag = zero_tag_from(page.tag, off);
        }
    }
}

impl crate::fs::Fs {
    /// The descriptors of `pid` (its table's, shared with the threads that share it).
    pub fn fds(&self, vm: &crate::mm::Vm, pid: Pid) -> KResult<&BTreeMap<i64, FileId>> {
        Ok(&self.tables[vm.procs.get(&pid).ok_or(Errno::ESRCH)?.files].fds)
    }

    fn fds_mut(&mut self, vm: &crate::mm::Vm, pid: Pid) -> KResult<&mut BTreeMap<i64, FileId>> {
        Ok(&mut self.tables[vm.procs.get(&pid).ok_or(Errno::ESRCH)?.files].fds)
    }

    fn fd_file(&self, vm: &crate::mm::Vm, pid: Pid, fd: i64) -> KResult<FileId> {
        self.fds(vm, pid)?.get(&fd).copied().ok_or(Errno::EBADF)
    }

    /// Whether `fd` still holds the process's inherited stdio (see [`FdTable::stdio`]).
    pub fn is_stdio(&self, vm: &crate::mm::Vm, pid: Pid, fd: i64) -> bool {
        vm.procs.get(&pid).is_some_and(|p| self.tables[p.files].stdio_open(fd))
    }

    fn clear_stdio(&mut self, vm: &crate::mm::Vm, pid: Pid, fd: i64) {
        if let Some(p) = vm.procs.get(&pid)
            && (0..3).contains(&fd)
        {
            self.tables[p.files].stdio &= !(1u8 << fd);
        }
    }

    /// `alloc_fd`: the lowest descriptor from `min` that neither an open file nor stdio holds.
    fn install_fd(&mut self, vm: &crate::mm::Vm, pid: Pid, file: FileId, min: i64) -> KResult<i64> {
        let table = &mut self.tables[vm.procs.get(&pid).ok_or(Errno::ESRCH)?.files];
        let mut fd = min;
        while table.fds.contains_key(&fd) || table.stdio_open(fd) {
            fd += 1;
        }
        if fd >= 1024 {
            return Err(Errno::EMFILE);
        }
        table.fds.insert(fd, file);
        Ok(fd)
    }
}
