//! anonmm-model: an executable model of Linux 6.18 anonymous memory management.
//!
//! The layout follows the kernel: one module per concept (VMAs, merging, page tables, folios,
//! the anon_vma reverse map, faults, fork, mmap/munmap/mprotect/madvise, mremap), the designs
//! (`policy`, `relocate`), the views (`/proc/pid/maps`, `smaps`, `pagemap`, the reverse-map
//! graph) and the invariant checker. It sees no script, runner, trace importer or command
//! line (ARCHITECTURE.md): those are the layers above it (`anonmm-script`, `anonmm-harness`,
//! `anonmm-oracle`, the `anonmm` binary). This crate is the model itself, for programs that
//! want to drive it directly.
//!
//! # Embedding the model
//!
//! - [`mm::System`] is the machine: every process, address space ([`mm::Mm`]), VMA
//!   ([`vma::Vma`]), folio ([`folio::Folio`]), anon_vma and file. Make one with
//!   [`System::default()`](mm::System::default) (the settings of our Linux 6.18 x86_64
//!   machines) or [`System::new`](mm::System::new) with a [`mm::Config`], then
//!   [`spawn`](mm::System::spawn) a process with an empty address space.
//! - System calls are methods taking the process id first and the syscall's own arguments
//!   as the kernel takes them (`u64` addresses, lengths and flags from [`abi`]). They return
//!   [`KResult<T>`](errno::KResult): the syscall's value, or the [`errno::Errno`] the kernel
//!   would set. [`sys_mmap`](mm::System::sys_mmap), [`sys_munmap`](mm::System::sys_munmap),
//!   [`sys_mprotect`](mm::System::sys_mprotect), [`sys_madvise`](mm::System::sys_madvise),
//!   [`sys_mremap`](mm::System::sys_mremap), [`sys_brk`](mm::System::sys_brk),
//!   [`sys_fork`](mm::System::sys_fork), [`sys_exit`](mm::System::sys_exit),
//!   [`sys_execve`](mm::System::sys_execve), and the file calls of [`fs`].
//! - [`touch`](mm::System::touch) is a program's memory access: it faults every page of a
//!   range for read or write, a write storing a tag in the page (the model keeps a tag per
//!   page instead of contents). It returns `Ok(Err(signal))` where the kernel would raise
//!   SIGSEGV or SIGBUS.
//! - Views: [`maps`](mm::System::maps) and [`proc_maps`](mm::System::proc_maps) are
//!   `/proc/pid/maps`; [`page_at`](mm::System::page_at) is the page (folio, tag, writability)
//!   a process maps at an address; [`pagemap`](mm::System::pagemap) every present, swapped
//!   or migrating page;
//!   [`rmap_walk_anon`](crate::rmap::Rmap::rmap_walk_anon) walks the reverse map of a folio;
//!   [`System::trace`](mm::System::trace)`.stats` counts the work done (faults, COW copies, merges
//!   and refusals by reason, moved PTEs).
//! - [`System::policy`](mm::System::policy) chooses what a moving `mremap` does to the moved
//!   folios ([`policy::Policy`]): `Kernel` (Linux 6.18, the default) or one of the designs
//!   that relocate them so that the moved VMA can merge.
//! - [`check`](mm::System::check) runs the invariant checker over the whole machine.
//!
//! [`api::prelude`] re-exports what these examples use. Nothing in this API panics on bad
//! arguments: unknown processes are `ESRCH`, bad addresses, lengths and flags get the errno
//! the kernel gives (`tests/api_no_panic.rs` checks this with arbitrary arguments). A call
//! needing behaviour the model lacks (faulting more than 64 GiB at once, a few kernel paths)
//! says so in [`System::unsupported`](mm::System::unsupported); its result is then not the
//! kernel's. The internal ids in the public fields
//! (`VmaId`, `MmId`, `FolioId`) index the arenas of `System` directly: the lower-level
//! methods taking them expect live ones, as the kernel's own functions do.
//!
//! # Examples
//!
//! ## An address space, a mapping, faults
//!
//! ```
//! use anonmm_model::api::prelude::*;
//!
//! let mut sys = System::default();
//! let pid = Pid(1);
//! sys.spawn(pid)?;
//! let a = sys.sys_mmap(
//!     pid,
//!     0x2000_0000_0000,
//!     4 * PAGE_SIZE,
//!     PROT_READ | PROT_WRITE,
//!     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
//!     -1,
//!     0,
//! )?;
//! assert_eq!(a, 0x2000_0000_0000);
//! // Nothing is faulted yet.
//! assert_eq!(sys.page_at(pid, a)?, None);
//! // A read fault maps the shared zero page; a write fault a fresh page holding the tag.
//! sys.touch(pid, a, PAGE_SIZE, false, &|_| 0)?.expect("no signal");
//! assert_eq!(sys.page_at(pid, a)?.expect("mapped").folio, ZERO_FOLIO);
//! sys.touch(pid, a + PAGE_SIZE, 2 * PAGE_SIZE, true, &|addr| addr >> 12)?.expect("no signal");
//! let p = sys.page_at(pid, a + 2 * PAGE_SIZE)?.expect("mapped");
//! assert_eq!((p.tag, p.writable), ((a + 2 * PAGE_SIZE) >> 12, true));
//! // A write to memory mapped read-only is SIGSEGV there, after the pages before it.
//! sys.sys_mprotect(pid, a + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ)?;
//! let segv = TouchSignal { signal: Signal::SIGSEGV, at: VirtAddr(a + 3 * PAGE_SIZE) };
//! assert_eq!(sys.touch(pid, a, 4 * PAGE_SIZE, true, &|_| 1)?, Err(segv));
//! assert_eq!(sys.page_at(pid, a)?.expect("mapped").tag, 1);
//! assert_eq!(sys.check(), Ok(()));
//! # Ok::<(), Errno>(())
//! ```
//!
//! ## `/proc/pid/maps`
//!
//! The lines are the kernel's, byte for byte (`show_map_vma`): anonymous memory shows
//! offset 0, device `00:00` and inode 0.
//!
//! ```
//! use anonmm_model::api::prelude::*;
//!
//! let mut sys = System::default();
//! sys.spawn(Pid(1))?;
//! let fixed = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
//! sys.sys_mmap(Pid(1), 0x2000_0000_0000, 0x4000, PROT_READ | PROT_WRITE, fixed, -1, 0)?;
//! // Unmapping the middle page splits the VMA in two.
//! sys.sys_munmap(Pid(1), 0x2000_0000_1000, 0x1000)?;
//! assert_eq!(
//!     sys.maps(Pid(1)),
//!     [
//!         "200000000000-200000001000 rw-p 00000000 00:00 0 ",
//!         "200000002000-200000004000 rw-p 00000000 00:00 0 ",
//!     ]
//! );
//! // Same flags again: the new mapping merges with both neighbours into one VMA.
//! sys.sys_mmap(Pid(1), 0x2000_0000_1000, 0x1000, PROT_READ | PROT_WRITE, fixed, -1, 0)?;
//! assert_eq!(sys.maps(Pid(1)), ["200000000000-200000004000 rw-p 00000000 00:00 0 "]);
//! assert_eq!(sys.vma_count(Pid(1))?, 1);
//! # Ok::<(), Errno>(())
//! ```
//!
//! ## Fork and copy-on-write
//!
//! After `fork` parent and child map the same folio read-only; the child's write copies
//! it into a new folio of its own, and the parent keeps the old contents.
//!
//! ```
//! use anonmm_model::api::prelude::*;
//!
//! let mut sys = System::default();
//! let (parent, child) = (Pid(1), Pid(2));
//! sys.spawn(parent)?;
//! let a = sys.sys_mmap(parent, 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
//! sys.touch(parent, a, PAGE_SIZE, true, &|_| 0x11)?.expect("no signal");
//! let original = sys.page_at(parent, a)?.expect("mapped").folio;
//!
//! assert_eq!(sys.sys_fork(parent, child)?, 2);
//! for pid in [parent, child] {
//!     let p = sys.page_at(pid, a)?.expect("mapped");
//!     assert_eq!((p.folio, p.tag, p.writable), (original, 0x11, false));
//! }
//! assert_eq!(sys.mem.folios[original].mapcount(), 2);
//!
//! sys.touch(child, a, PAGE_SIZE, true, &|_| 0x22)?.expect("no signal");
//! let copy = sys.page_at(child, a)?.expect("mapped");
//! assert_ne!(copy.folio, original);
//! assert_eq!((copy.tag, copy.writable), (0x22, true));
//! assert_eq!(sys.page_at(parent, a)?.expect("mapped").tag, 0x11);
//! assert_eq!(sys.mem.folios[original].mapcount(), 1);
//! assert_eq!(sys.trace.stats.cow_copies, 1);
//!
//! // The parent is now the only user: its write reuses the folio instead of copying.
//! sys.touch(parent, a, PAGE_SIZE, true, &|_| 0x33)?.expect("no signal");
//! assert_eq!(sys.page_at(parent, a)?.expect("mapped").folio, original);
//! assert_eq!(sys.trace.stats.cow_reuses, 1);
//! assert_eq!(sys.check(), Ok(()));
//! # Ok::<(), Errno>(())
//! ```
//!
//! ## The reverse map
//!
//! [`rmap_walk_anon`](crate::rmap::Rmap::rmap_walk_anon) finds, from a folio, every VMA (of any
//! process) that may map it and the address it would be mapped at, as the kernel's walk
//! does through the folio's anon_vma. Like the kernel's, the walk visits candidates: the
//! page table says whether one still maps the folio.
//!
//! ```
//! use anonmm_model::api::prelude::*;
//!
//! let mut sys = System::default();
//! sys.spawn(Pid(1))?;
//! let a = sys.sys_mmap(Pid(1), 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
//! sys.touch(Pid(1), a, PAGE_SIZE, true, &|_| 1)?.expect("no signal");
//! sys.sys_fork(Pid(1), Pid(2))?;
//! let folio = sys.page_at(Pid(1), a)?.expect("mapped").folio;
//!
//! // Shared after fork: one hit in each process, at the same address.
//! let hits = sys.rmap.rmap_walk_anon(&sys.vm, &sys.mem, folio);
//! let mut mms: Vec<_> = hits.iter().map(|h| sys.vm.vmas[h.vma].mm).collect();
//! mms.sort();
//! assert_eq!(mms, [sys.vm.mm_of(Pid(1))?, sys.vm.mm_of(Pid(2))?]);
//! assert!(hits.iter().all(|h| h.addr == VirtAddr(a)));
//!
//! // The child's write gives it a copy under its own anon_vma, which reaches only the child.
//! sys.touch(Pid(2), a, PAGE_SIZE, true, &|_| 2)?.expect("no signal");
//! let copy = sys.page_at(Pid(2), a)?.expect("mapped").folio;
//! let hits = sys.rmap.rmap_walk_anon(&sys.vm, &sys.mem, copy);
//! assert_eq!(hits.len(), 1);
//! assert_eq!(sys.vm.vmas[hits[0].vma].mm, sys.vm.mm_of(Pid(2))?);
//! // The original's walk still visits the child's VMA (it is linked to the parent's
//! // anon_vma), but only the parent maps it.
//! assert_eq!(sys.rmap.rmap_walk_anon(&sys.vm, &sys.mem, folio).len(), 2);
//! assert_eq!(sys.mem.folios[folio].mapcount(), 1);
//! # Ok::<(), Errno>(())
//! ```
//!
//! ## `mremap` under a policy
//!
//! Three separately mapped and written pieces are moved next to each other (what a
//! compacting allocator does). Under [`Policy::Kernel`](policy::Policy::Kernel) each moved
//! piece keeps the page offset (`vm_pgoff`, and its folios' `index`) of the place where it
//! was first faulted, so the three never merge. A relocating policy rewrites them for the
//! new address, and the pieces merge into one VMA (`examples/policy_pieces.strace`).
//!
//! ```
//! use anonmm_model::api::prelude::*;
//!
//! fn compact(policy: Policy) -> KResult<System> {
//!     let mut sys = System::default();
//!     sys.policy = policy;
//!     sys.spawn(Pid(1))?;
//!     let rw = PROT_READ | PROT_WRITE;
//!     let piece = 4 * PAGE_SIZE;
//!     for i in 0..3 {
//!         let a = 0x2000_0000_0000 + i * 0x10_0000;
//!         sys.sys_mmap(Pid(1), a, piece, rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)?;
//!         sys.touch(Pid(1), a, piece, true, &|addr| addr)?.expect("no signal");
//!     }
//!     for i in 0..3 {
//!         let (from, to) = (0x2000_0000_0000 + i * 0x10_0000, 0x2000_0040_0000 + i * piece);
//!         let moved = sys.sys_mremap(Pid(1), from, piece, piece, MREMAP_MAYMOVE | MREMAP_FIXED, to)?;
//!         assert_eq!(moved, to);
//!     }
//!     assert_eq!(sys.check(), Ok(()));
//!     Ok(sys)
//! }
//!
//! let kernel = compact(Policy::Kernel)?;
//! assert_eq!(kernel.vma_count(Pid(1))?, 3);
//! let relocated = compact(Policy::RelocateAll)?;
//! assert_eq!(relocated.maps(Pid(1)), ["200000400000-20000040c000 rw-p 00000000 00:00 0 "]);
//!
//! // The contents moved with the pages (each page still holds the address it was written
//! // at), but only the relocating policy changed the folio's index to fit the new place.
//! for sys in [&kernel, &relocated] {
//!     let p = sys.page_at(Pid(1), 0x2000_0040_4000)?.expect("mapped");
//!     assert_eq!(p.tag, 0x2000_0010_0000);
//! }
//! let index = |sys: &System| -> KResult<PgOff> {
//!     let p = sys.page_at(Pid(1), 0x2000_0040_4000)?.expect("mapped");
//!     Ok(sys.mem.folios[p.folio].index)
//! };
//! assert_eq!(index(&kernel)?, PgOff(0x2000_0010_0000 >> 12));
//! assert_eq!(index(&relocated)?, PgOff(0x2000_0040_4000 >> 12));
//! // The same outcome under `auto`, which relocates only where that brings a merge.
//! assert_eq!(compact(Policy::parse("auto").expect("known"))?.vma_count(Pid(1))?, 1);
//! # Ok::<(), Errno>(())
//! ```
//!
//! ## Typed errors
//!
//! A call the kernel refuses returns its errno, and changes nothing.
//!
//! ```
//! use anonmm_model::api::prelude::*;
//!
//! let mut sys = System::default();
//! sys.spawn(Pid(1))?;
//! let anon = MAP_PRIVATE | MAP_ANONYMOUS;
//! // No such process.
//! assert_eq!(sys.sys_mmap(Pid(7), 0, PAGE_SIZE, PROT_READ, anon, -1, 0), Err(Errno::ESRCH));
//! assert_eq!(sys.sys_fork(Pid(7), Pid(8)), Err(Errno::ESRCH));
//! // An unaligned address, a zero length, an unknown flag.
//! let a = sys.sys_mmap(Pid(1), 0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, anon, -1, 0)?;
//! assert_eq!(sys.sys_munmap(Pid(1), a + 1, PAGE_SIZE), Err(Errno::EINVAL));
//! assert_eq!(sys.sys_mmap(Pid(1), 0, 0, PROT_READ, anon, -1, 0), Err(Errno::EINVAL));
//! assert_eq!(sys.sys_mremap(Pid(1), a, PAGE_SIZE, PAGE_SIZE, 1 << 20, 0), Err(Errno::EINVAL));
//! // A length that overflows; a descriptor that is not open.
//! assert_eq!(sys.sys_mmap(Pid(1), 0, u64::MAX, PROT_READ, anon, -1, 0), Err(Errno::ENOMEM));
//! assert_eq!(sys.sys_mmap(Pid(1), 0, PAGE_SIZE, PROT_READ, MAP_PRIVATE, 42, 0), Err(Errno::EBADF));
//! // Growing in place into another mapping, without MREMAP_MAYMOVE.
//! sys.sys_munmap(Pid(1), a + PAGE_SIZE, PAGE_SIZE)?;
//! sys.sys_mmap(Pid(1), a + PAGE_SIZE, PAGE_SIZE, PROT_READ, anon | MAP_FIXED, -1, 0)?;
//! assert_eq!(sys.sys_mremap(Pid(1), a, PAGE_SIZE, 2 * PAGE_SIZE, 0, 0), Err(Errno::ENOMEM));
//! assert_eq!(sys.vma_count(Pid(1))?, 2);
//! // Errno carries the number and the text strace prints.
//! assert_eq!((Errno::EINVAL.code(), Errno::EINVAL.message()), (22, "Invalid argument"));
//! # Ok::<(), Errno>(())
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod arena;
pub mod check;
pub(crate) mod designs;
pub mod fault;
pub mod folio;
pub mod fork;
pub mod fs;
pub mod graph;
pub mod gup;
pub mod huge_memory;
pub mod inspect;
pub mod kernel;
pub mod khugepaged;
pub mod madvise;
pub mod memory;
pub mod merge;
pub mod migrate;
pub mod mlock;
pub mod mm;
pub mod mmap;
pub mod mprotect;
pub mod mremap;
pub mod pagetable;
pub mod policy;
pub mod procfs;
pub mod relocate;
pub mod rmap;
pub mod smaps;
pub mod stats;
pub mod swap;
pub mod uffd;
pub mod vma;
pub mod vma_tree;

/// The ABI layer's modules, under the paths the model has always used (`crate::types::Pid`).
pub use anonmm_abi::{abi, errno, types};
