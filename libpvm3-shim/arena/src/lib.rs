//! Large allocations of the library in a shared-memory arena that pvm-rs peers of the same
//! host map and copy from ([`PeerArena`]; the transfers themselves are in the library's
//! `vmread.rs` and the daemon's `server/arelay.rs`).
//!
//! Why: a large message on a direct route between two pvm-rs tasks is read by the receiver from
//! the sender's memory with `process_vm_readv` (`vmread.rs`). That call pins every page of the
//! sender's buffer and copies through the kernel: measured here it costs about twice a plain
//! `memcpy` of the same bytes, and at 1 MB it is the largest single step of a round trip
//! (docs/bench-daemon.md, "Shared arena"). If the sender's packed body lives in a shared
//! mapping of a `memfd`, the receiver maps the same file once per route and copies the body
//! with `memcpy`, no system call per piece.
//!
//! How:
//! * The library's global allocator sends every allocation of at least [`ARENA_MIN`] bytes
//!   (message bodies and the buffer pool, `pool.rs`; nothing of the program's own memory) to
//!   one `MAP_SHARED` mapping of a sealed memfd named `pvm-arena` ([`ARENA_SIZE`] bytes of
//!   address space, pages allocated only when written). Smaller allocations, and large ones
//!   once the arena is full, go to the system allocator as before.
//! * The memfd is sealed against shrinking and growing before it is mapped: a reader can never
//!   fault (SIGBUS) on a page past the end. Its first [`UNIT`] holds a header (magic, the
//!   sender's base address, the size) from which a reader turns addresses in a descriptor into
//!   offsets.
//! * Blocks are [`UNIT`]-grained, first fit over a small fixed table of free extents (the
//!   allocator itself must not allocate); a freed block's pages are returned to the kernel
//!   (`FALLOC_FL_PUNCH_HOLE`). A block at the top grows in place.
//! * `fork(2)`: a child must not share its parent's buffers (unless the process declared that its
//!   children only exec, [`children_exec`]). In the child the used part of the
//!   arena is copied to private memory at the same addresses, the rest of the range stays
//!   reserved (`PROT_NONE`), and the child allocates from the system allocator only.
//! * `PVM_NO_ARENA` (or `PVM_NO_VMREAD`) in the environment keeps the arena off, and so does a
//!   limit on the address space (`RLIMIT_AS`, `ulimit -v`): the reservation would count against it.
//!
//! Security: a peer maps the arena through `/proc/<pid>/fd`, which the kernel allows only to a
//! process that may read our memory anyway (the `process_vm_readv` permission); the arena holds
//! the library's message buffers and nothing else of the program.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Allocations at least this large go to the arena (the smallest message sent by descriptor).
pub const ARENA_MIN: usize = 256 << 10;
/// Address space of the arena (sparse: only written pages cost memory).
pub const ARENA_SIZE: usize = 8 << 30;
/// Block granularity, and the size of the header at the start.
pub const UNIT: usize = 64 << 10;
/// Alignment of the blocks (that of the mapping).
const PAGE: usize = 4096;
/// First word of the header: "pvmARENA".
pub const MAGIC: u64 = 0x4152_454e_416d_7670;
/// Name of the memfd (a reader finds it under `/proc/<pid>/fd` by this name).
pub const NAME: &str = "pvm-arena";
const CNAME: &std::ffi::CStr = c"pvm-arena";
/// Free extents tracked at most; a block freed when the table is full is still returned to
/// the kernel, only its address range is not reused.
const MAX_FREE: usize = 256;

const UNITS: u32 = (ARENA_SIZE / UNIT) as u32;

/// State of the arena: not tried yet, on, off (disabled, failed, or a forked child).
const UNTRIED: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNTRIED);
/// Base address of the mapping (0 before it exists); stays reserved for the process's life.
static BASE: AtomicUsize = AtomicUsize::new(0);
static FD: AtomicUsize = AtomicUsize::new(usize::MAX);
/// `Blocks::top`, for a forked child (which must not take the lock).
static TOP: AtomicUsize = AtomicUsize::new(1);
/// A forked child copies the used part of the arena to private memory ([`children_exec`]).
static COPY_IN_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Declares that every child this process forks only execs (the pvmd-rs daemon, which starts
/// tasks with `fork` + `execve`): after `fork(2)` the child leaves the arena alone instead of
/// copying its used part to private memory, a copy of every block in use per fork (measured:
/// with 64 MB of relay blocks kept, a spawn of 100 tasks took 967 ms instead of 140). Such a
/// child must not touch a block before it execs; the exec drops the mapping, and the memfd
/// is close-on-exec.
pub fn children_exec() {
    COPY_IN_CHILD.store(false, Ordering::Release);
}

struct Blocks {
    /// First unit never handed out.
    top: u32,
    /// Free extents below `top`: (first unit, units), unordered.
    free: [(u32, u32); MAX_FREE],
    nfree: usize,
}

static BLOCKS: Mutex<Blocks> = Mutex::new(Blocks {
    top: 1,
    free: [(0, 0); MAX_FREE],
    nfree: 0,
});

/// Runs `f` on the block table, under its lock.
fn with_blocks<T>(f: impl FnOnce(&mut Blocks) -> T) -> T {
    let mut b = BLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    let r = f(&mut b);
    TOP.store(b.top as usize, Ordering::Release);
    r
}

fn units_for(size: usize) -> Option<u32> {
    u32::try_from(size.div_ceil(UNIT)).ok().filter(|&u| u > 0 && u < UNITS)
}

impl Blocks {
    fn take(&mut self, units: u32) -> Option<u32> {
        if let Some(i) = (0..self.nfree).find(|&i| self.free[i].1 >= units) {
            return Some(self.carve(i, units));
        }
        if UNITS - self.top >= units {
            let at = self.top;
            self.top += units;
            return Some(at);
        }
        None
    }

    /// Grows the block at `at` of `units` to `want` units where it lies, if the units after
    /// it are free.
    fn grow(&mut self, at: u32, units: u32, want: u32) -> bool {
        let end = at + units;
        let more = want - units;
        if end == self.top {
            if UNITS - self.top >= more {
                self.top += more;
                return true;
            }
            return false;
        }
        if let Some(i) = (0..self.nfree).find(|&i| self.free[i].0 == end && self.free[i].1 >= more) {
            self.carve(i, more);
            return true;
        }
        false
    }

    /// Takes `units` from the start of free extent `i` (which has that many), returning where
    /// they start.
    fn carve(&mut self, i: usize, units: u32) -> u32 {
        let (at, n) = self.free[i];
        if n == units {
            self.nfree -= 1;
            self.free[i] = self.free[self.nfree];
        } else {
            self.free[i] = (at + units, n - units);
        }
        at
    }

    fn give(&mut self, mut at: u32, mut units: u32) {
        // Merge with free neighbours, then give the top back if the extent ends there.
        let mut i = 0;
        while i < self.nfree {
            let (a, n) = self.free[i];
            if a + n == at || at + units == a {
                at = at.min(a);
                units += n;
                self.nfree -= 1;
                self.free[i] = self.free[self.nfree];
                i = 0;
                continue;
            }
            i += 1;
        }
        if at + units == self.top {
            self.top = at;
        } else if self.nfree < MAX_FREE {
            self.free[self.nfree] = (at, units);
            self.nfree += 1;
        }
    }
}

/// The environment says no (read with getenv: the allocator must not allocate).
fn disabled_by_env() -> bool {
    // SAFETY: getenv with NUL-terminated names; the pointers are only compared with null.
    unsafe { !libc::getenv(c"PVM_NO_ARENA".as_ptr()).is_null() || !libc::getenv(c"PVM_NO_VMREAD".as_ptr()).is_null() }
}

/// The process has a limit on its address space (`ulimit -v`, common on batch systems): 8 GiB
/// reserved for the arena could leave the program's own allocations without room, so the
/// library does without it there.
fn address_space_limited() -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a local.
    unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) == 0 && r.rlim_cur != libc::RLIM_INFINITY }
}

/// Why the arena is off by configuration (the environment, an address-space limit), if it is.
pub fn off_reason() -> Option<&'static str> {
    if disabled_by_env() {
        Some("PVM_NO_ARENA or PVM_NO_VMREAD is set")
    } else if address_space_limited() {
        Some("the address space is limited (RLIMIT_AS)")
    } else {
        None
    }
}

/// Creates the arena (once). True when it is on.
pub fn ready() -> bool {
    match STATE.load(Ordering::Acquire) {
        ON => return true,
        OFF => return false,
        _ => {}
    }
    with_blocks(|_| {
        if STATE.load(Ordering::Acquire) == UNTRIED {
            let ok = off_reason().is_none() && create();
            STATE.store(if ok { ON } else { OFF }, Ordering::Release);
        }
        STATE.load(Ordering::Acquire) == ON
    })
}

fn create() -> bool {
    // SAFETY: plain system calls on a descriptor we own; the mapping is written only here
    // (header) and through blocks handed out by the allocator.
    unsafe {
        let fd = libc::memfd_create(CNAME.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
        if fd < 0 {
            return false;
        }
        let sealed = libc::ftruncate(fd, ARENA_SIZE as libc::off_t) == 0
            && libc::fcntl(
                fd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            ) == 0;
        if !sealed {
            libc::close(fd);
            return false;
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            ARENA_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            libc::close(fd);
            return false;
        }
        let h = p as *mut u64;
        h.write(MAGIC);
        h.add(1).write(p as u64);
        h.add(2).write(ARENA_SIZE as u64);
        BASE.store(p as usize, Ordering::Release);
        FD.store(fd as usize, Ordering::Release);
        libc::pthread_atfork(None, None, Some(after_fork_child));
    }
    true
}

/// In a forked child: the used part of the arena becomes private memory at the same
/// addresses, the rest stays reserved, and nothing new goes there.
extern "C" fn after_fork_child() {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    STATE.store(OFF, Ordering::Release);
    if !COPY_IN_CHILD.load(Ordering::Acquire) {
        return;
    }
    // The lock may have been held by another thread of the parent at the fork: the child
    // reads the mirror of `top` instead (a block being carved at that instant is lost).
    let top = TOP.load(Ordering::Acquire) * UNIT;
    // SAFETY: the copy goes to a fresh private mapping of `top` bytes, which then replaces the
    // shared one at the same addresses; the remaining range is remapped inaccessible.
    unsafe {
        let fd = FD.load(Ordering::Acquire);
        if fd != usize::MAX {
            libc::close(fd as i32);
        }
        let copy = libc::mmap(
            std::ptr::null_mut(),
            top,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if copy == libc::MAP_FAILED {
            return;
        }
        std::ptr::copy_nonoverlapping(base as *const u8, copy as *mut u8, top);
        libc::mremap(
            copy,
            top,
            top,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            base as *mut libc::c_void,
        );
        libc::mmap(
            (base + top) as *mut libc::c_void,
            ARENA_SIZE - top,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1,
            0,
        );
    }
}

fn in_arena(p: *mut u8) -> bool {
    let base = BASE.load(Ordering::Relaxed);
    base != 0 && (p as usize) >= base && (p as usize) < base + ARENA_SIZE
}

/// `p..p+len` lies whole in our arena (after the header), which is on.
pub fn holds(p: *const u8, len: usize) -> bool {
    let base = BASE.load(Ordering::Acquire);
    let a = p as usize;
    STATE.load(Ordering::Acquire) == ON
        && base != 0
        && a >= base + UNIT
        && a.checked_add(len).is_some_and(|end| end <= base + ARENA_SIZE)
}

/// The unit where a block of the arena starts.
fn unit_of(p: *mut u8) -> u32 {
    ((p as usize - BASE.load(Ordering::Relaxed)) / UNIT) as u32
}

fn alloc_in(size: usize) -> *mut u8 {
    let Some(units) = units_for(size) else {
        return std::ptr::null_mut();
    };
    let Some(at) = with_blocks(|b| b.take(units)) else {
        return std::ptr::null_mut();
    };
    (BASE.load(Ordering::Relaxed) + at as usize * UNIT) as *mut u8
}

fn free_in(p: *mut u8, size: usize) {
    if STATE.load(Ordering::Acquire) != ON {
        return; // a forked child's private copy: left as it is
    }
    if let Some(units) = units_for(size) {
        release(unit_of(p), units);
    }
}

/// Gives units back: their pages to the kernel (reads of them give zeros), their range to the
/// table.
fn release(at: u32, units: u32) {
    // SAFETY: punches a range of our own memfd that no live block covers.
    unsafe {
        libc::fallocate(
            FD.load(Ordering::Relaxed) as i32,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            (at as usize * UNIT) as libc::off_t,
            (units as usize * UNIT) as libc::off_t,
        );
    }
    with_blocks(|b| b.give(at, units));
}

/// The library's allocator: [`System`], except for large blocks (see the module text).
pub struct ShimAlloc;

// SAFETY: every block handed out is either System's (and goes back to it) or a distinct
// page-aligned range of the arena mapping of exactly `units_for(size)` units, recognised by its
// address; alignments above a page go to System.
unsafe impl GlobalAlloc for ShimAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() >= ARENA_MIN && l.align() <= PAGE && ready() {
            let p = alloc_in(l.size());
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: forwarded as it came.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if in_arena(p) {
            free_in(p, l.size());
        } else {
            // SAFETY: System's block, forwarded as it came.
            unsafe { System.dealloc(p, l) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let arena = in_arena(p);
        if !arena && (new < ARENA_MIN || STATE.load(Ordering::Acquire) == OFF) {
            // SAFETY: System's block, forwarded as it came.
            return unsafe { System.realloc(p, l, new) };
        }
        if arena && STATE.load(Ordering::Acquire) == ON {
            if let (Some(have), Some(want)) = (units_for(l.size()), units_for(new)) {
                let at = unit_of(p);
                if want <= have {
                    // In place; the units past the new end go back (the block must always be
                    // exactly what its layout size says, which dealloc will be given).
                    if want < have {
                        release(at + want, have - want);
                    }
                    return p;
                }
                if with_blocks(|b| b.grow(at, have, want)) {
                    return p;
                }
            }
        }
        // SAFETY: a fresh block of the new size and the same alignment.
        let q = unsafe { self.alloc(Layout::from_size_align_unchecked(new, l.align())) };
        if !q.is_null() {
            // SAFETY: both blocks are live and at least min(old, new) bytes long.
            unsafe {
                std::ptr::copy_nonoverlapping(p, q, l.size().min(new));
                self.dealloc(p, l);
            }
        }
        q
    }
}

/// A block of the arena owned outright, for a program that keeps [`System`] as its global
/// allocator and puts only chosen buffers here (the pvmd-rs daemon: message bodies it passes on
/// by descriptor). Its bytes are always initialised: pages of the memfd read as zeros until
/// written, and freed ones are punched back to zeros.
#[derive(Debug)]
pub struct Block {
    p: *mut u8,
    len: usize,
}

// SAFETY: the block is a range of a process-wide mapping that only its owner writes.
unsafe impl Send for Block {}

impl Block {
    /// A block of `len` bytes, or None when the arena is off (or full) or `len` is 0.
    pub fn new(len: usize) -> Option<Block> {
        if len == 0 || !ready() {
            return None;
        }
        let p = alloc_in(len);
        (!p.is_null()).then_some(Block { p, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes of the live mapping, initialised (see the type), owned by us.
        unsafe { std::slice::from_raw_parts(self.p, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.p, self.len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        free_in(self.p, self.len);
    }
}

/// A pvm-rs peer's shared arena (`arena.rs`), mapped read-only: a descriptor whose pieces lie
/// in it is copied with `memcpy` instead of `process_vm_readv`.
#[derive(Debug)]
pub struct PeerArena {
    map: *const u8,
    /// The peer's address of the mapping's first byte, and the mapping's length.
    base: u64,
    size: u64,
}

// SAFETY: a read-only mapping owned by this value, only read by `Remote::read_into`.
unsafe impl Send for PeerArena {}
// SAFETY: as above; reads need no synchronisation on our side.
unsafe impl Sync for PeerArena {}

impl PeerArena {
    /// Maps the arena of process `pid` (the kernel-checked peer of a route), if it has one:
    /// a memfd named [`NAME`] under `/proc/<pid>/fd`, sealed against shrinking
    /// (so no page of the mapping can vanish under a copy), whose header names its size and the
    /// peer's base address.
    pub fn open(pid: i32) -> Option<PeerArena> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        let want = format!("/memfd:{}", NAME);
        let path = dir
            .flatten()
            .map(|e| e.path())
            .find(|p| std::fs::read_link(p).is_ok_and(|l| l.as_os_str().as_bytes().starts_with(want.as_bytes())))?;
        let f = std::fs::File::open(&path).ok()?;
        let fd = f.as_raw_fd();
        // SAFETY: fcntl/fstat on a descriptor we own.
        let (seals, size) = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            (
                libc::fcntl(fd, libc::F_GET_SEALS),
                (libc::fstat(fd, &mut st) == 0).then_some(st.st_size),
            )
        };
        let size = u64::try_from(size?).ok()?;
        // A size far beyond ours is not an arena of this library (and would cost address
        // space for nothing).
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 || size < UNIT as u64 || size > 8 * ARENA_SIZE as u64 {
            return None;
        }
        // SAFETY: a read-only shared mapping of the whole (sealed, never shrinking) file.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        // Owned from here: dropped (unmapped) on every way out.
        let mut a = PeerArena {
            map: map as *const u8,
            base: 0,
            size,
        };
        // SAFETY: the header words lie in the first page of the mapping.
        let (magic, base, hsize) = unsafe {
            let h = map as *const u64;
            (h.read(), h.add(1).read(), h.add(2).read())
        };
        a.base = base;
        (magic == MAGIC && hsize == size && base.checked_add(size).is_some()).then_some(a)
    }

    /// The peer's address of the arena's first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The arena's length.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the peer's `addr..addr+len` is in our mapping, if it lies there whole.
    pub fn find(&self, addr: u64, len: u64) -> Option<*const u8> {
        let off = addr.checked_sub(self.base)?;
        (off.checked_add(len)? <= self.size).then(|| self.map.wrapping_add(off as usize))
    }
}

impl Drop for PeerArena {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `size` bytes, no longer referenced.
        unsafe { libc::munmap(self.map as *mut libc::c_void, self.size as usize) };
    }
}

/// The unit tests allocate through the arena as the library does.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: ShimAlloc = ShimAlloc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_are_reused_merged_and_the_top_comes_back() {
        let mut b = Blocks {
            top: 1,
            free: [(0, 0); MAX_FREE],
            nfree: 0,
        };
        let a = b.take(4).unwrap();
        let c = b.take(2).unwrap();
        let d = b.take(3).unwrap();
        assert_eq!((a, c, d, b.top), (1, 5, 7, 10));
        b.give(c, 2);
        assert_eq!(b.take(1), Some(5), "first fit reuses the hole");
        b.give(5, 1);
        b.give(a, 4); // merges with the hole after it
        assert_eq!((b.nfree, b.free[0]), (1, (1, 6)));
        assert!(b.grow(d, 3, 5), "the top block grows in place");
        assert_eq!(b.top, 12);
        b.give(d, 5); // merges with 1..7 and gives everything back
        assert_eq!((b.top, b.nfree), (1, 0));
    }

    #[test]
    fn large_blocks_live_in_the_arena_and_small_ones_do_not() {
        if !ready() {
            return assert!(off_reason().is_some(), "the arena could not be created");
        }
        let mut big: Vec<u8> = Vec::with_capacity(1 << 20);
        big.extend((0..1 << 20).map(|i| i as u8));
        assert!(holds(big.as_ptr(), big.len()));
        big.reserve(4 << 20); // grows (in place or moved) and keeps the bytes
        assert!(holds(big.as_ptr(), big.len()));
        assert!(big.iter().enumerate().all(|(i, &x)| x == i as u8));
        big.truncate(300 << 10);
        big.shrink_to_fit(); // in place, the units past 320 KiB go back
        assert!(holds(big.as_ptr(), big.len()));
        assert!(big.iter().enumerate().all(|(i, &x)| x == i as u8));
        assert_eq!(CNAME.to_str(), Ok(NAME));
        let small = vec![1u8; 1000];
        assert!(!holds(small.as_ptr(), small.len()));
        drop(big);
        let h = BASE.load(Ordering::Acquire) as *const u64;
        // SAFETY: the header words at the start of the live mapping.
        unsafe { assert_eq!((h.read(), h.add(1).read() as usize), (MAGIC, h as usize)) };
    }

    #[test]
    fn a_forked_child_writes_to_a_private_copy() {
        if !ready() {
            return assert!(off_reason().is_some(), "the arena could not be created");
        }
        let mut big = vec![7u8; 1 << 20];
        assert!(holds(big.as_ptr(), big.len()));
        // SAFETY: the child only touches memory, allocates, and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            big.fill(9);
            let other = vec![1u8; 1 << 20];
            let ok = !holds(other.as_ptr(), other.len()) && other[5] == 1 && big[5] == 9;
            drop(other);
            drop(big);
            // SAFETY: ends the child without running the test harness's exit path.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        let mut st = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "child status {st:#x}"
        );
        assert!(big.iter().all(|&b| b == 7), "the child's writes reached the parent");
        let again = vec![3u8; 1 << 20];
        assert!(holds(again.as_ptr(), again.len()), "the parent's arena is still on");
    }

    /// After `children_exec` a forked child shares the arena (no copy): its write to a block
    /// is seen by the parent. Run in a process of its own (this test binary again), since the
    /// setting is process-wide and the other tests want the copy.
    #[test]
    fn after_children_exec_a_forked_child_shares_the_arena() {
        const ENV: &str = "PVM_ARENA_TEST_EXEC_CHILDREN";
        if std::env::var_os(ENV).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "tests::after_children_exec_a_forked_child_shares_the_arena"])
                .args(["--test-threads", "1"])
                .env(ENV, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        if !ready() {
            return assert!(off_reason().is_some(), "the arena could not be created");
        }
        children_exec();
        let mut b = Block::new(1 << 20).expect("a block");
        b.as_mut_slice().fill(7);
        // SAFETY: the child only writes to the block and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            b.as_mut_slice()[5] = 9;
            // SAFETY: ends the child without running the test harness's exit path.
            unsafe { libc::_exit(0) }
        }
        let mut st = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "child status {st:#x}"
        );
        assert_eq!(b.as_slice()[5], 9, "the child wrote to a copy");
        assert_eq!(b.as_slice()[4], 7);
    }
}
