//! Every system call nta-core makes, in one place.
//!
//! Nothing else in the crate calls `mmap`, `memfd_create`, `fcntl`,
//! `madvise`, `sched_getcpu`, `futex`, `membarrier`, `getrandom`,
//! `setrlimit` or `pthread_atfork` directly. The functions here are thin: they
//! translate errors into [`std::io::Error`] and document the kernel behaviour
//! the callers rely on.
//!
//! # Address space layout
//!
//! A pool reserves one contiguous, 2 MiB aligned range of virtual memory
//! (`PROT_NONE`, `MAP_NORESERVE`) big enough for its whole capacity. Segments
//! are later mapped over slots of that range with `MAP_FIXED`, and released by
//! mapping `PROT_NONE` over them again. Because the range never moves,
//! `ptr -> segment` is a subtraction and a shift.
//!
//! # Hugetlb without a hole
//!
//! A hugetlb mapping can fail at `mmap` time when no hugepage is left to
//! reserve. A failed `MAP_FIXED` mapping may leave a hole in our reservation
//! on older kernels, which another thread's `mmap` could then take. So a
//! hugetlb segment is first mapped at an address of the kernel's choosing and
//! then moved into its slot with `mremap(MREMAP_FIXED)`, which replaces the
//! reservation atomically. Only when that move is not supported do we fall
//! back to a plain `MAP_FIXED` mapping.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Reserves `len + align` bytes of address space and returns an `align`ed
/// pointer to `len` of them. The memory is `PROT_NONE` until segments are
/// mapped over it.
pub fn reserve_aligned(len: usize, align: usize) -> io::Result<NonNull<u8>> {
    let total = len + align;
    // SAFETY: an anonymous PROT_NONE mapping at an address of the kernel's
    // choosing cannot alias any existing memory.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    // Trim the unaligned head and the unused tail so the reservation is exact.
    // SAFETY: both ranges lie inside the mapping made above and nothing else
    // refers to them.
    unsafe {
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = start + total - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    NonNull::new(aligned as *mut u8).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps a range made by [`reserve_aligned`] or [`map_anonymous`].
///
/// # Safety
/// Nothing may use the range afterwards.
pub unsafe fn unmap(addr: NonNull<u8>, len: usize) {
    // SAFETY: the caller gives up the range.
    unsafe { libc::munmap(addr.as_ptr().cast(), len) };
}

/// Maps `len` bytes of zeroed, private, lazily committed read-write memory
/// (used for metadata). Pages cost nothing until touched.
pub fn map_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(raw.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Creates a memfd of `len` bytes that allows sealing, named `name` (what
/// `/proc/PID/maps` shows as `memfd:<name>`). With `hugetlb`, the file
/// lives on the kernel's internal hugetlbfs mount with 2 MiB pages.
pub fn memfd(name: &std::ffi::CStr, len: usize, hugetlb: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if hugetlb {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: `name` is a valid C string; the returned descriptor is owned
    // by the OwnedFd below.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    // SAFETY: `fd` was just created and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::ftruncate(fd, len as libc::off_t) })?;
    Ok(owned)
}

/// Writes `prefix` followed by the decimal `n` and a NUL into `buf`, and
/// returns it as a C string (memfd names, without allocating).
pub fn numbered_name<'a>(buf: &'a mut [u8; 48], prefix: &str, n: usize) -> &'a std::ffi::CStr {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let p = prefix.len().min(buf.len() - 21);
    buf[..p].copy_from_slice(&prefix.as_bytes()[..p]);
    let d = digits.len() - i;
    buf[p..p + d].copy_from_slice(&digits[i..]);
    buf[p + d] = 0;
    std::ffi::CStr::from_bytes_with_nul(&buf[..=p + d]).expect("one NUL at the end")
}

/// Seals a memfd against every future writer but the mappings that exist
/// now (`F_SEAL_FUTURE_WRITE`), and against resizing and further sealing.
/// After this, a new `PROT_WRITE` mapping of the file fails (EPERM) even
/// through a read-write re-open, and so does punching a hole in it.
pub fn seal_read_only(fd: RawFd) -> io::Result<()> {
    let seals = libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: plain syscall on a descriptor the caller owns.
    cvt(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }).map(drop)
}

/// A new, read-only open file description of the file behind `fd`
/// (through `/proc/self/fd`): what is handed to a reader process, so that
/// even `mprotect(PROT_WRITE)` on its mapping fails.
pub fn reopen_read_only(fd: RawFd) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 48];
    let name = numbered_name(&mut buf, "/proc/self/fd/", fd as usize);
    // SAFETY: `name` is a valid C string.
    let ro = cvt(unsafe { libc::open(name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: just opened, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(ro) })
}

/// Raises the soft limit on open descriptors to at least `want` (never
/// above the hard limit): an exportable pool holds one memfd per mapped
/// segment.
pub fn raise_fd_limit(want: usize) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let want = want as libc::rlim_t;
    if lim.rlim_cur >= want {
        return;
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: as above; a refusal leaves the limit as it was.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

/// Where a segment's memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSource {
    /// `MAP_SHARED` view of a memfd at an offset.
    Memfd { fd: RawFd, offset: usize },
    /// `MAP_PRIVATE | MAP_ANONYMOUS`, optionally with `MAP_HUGETLB`.
    Anonymous { hugetlb: bool },
}

/// Maps a segment over `addr..addr+len`, which must be inside our own
/// reservation. Hugetlb sources are mapped without leaving a hole on failure
/// (see the module notes).
///
/// # Safety
/// `addr..addr+len` must be a range of the pool's reservation that nothing
/// currently uses; its previous contents are discarded.
pub unsafe fn map_segment(addr: NonNull<u8>, len: usize, source: MapSource, hugetlb: bool) -> io::Result<()> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let (flags, fd, offset) = match source {
        MapSource::Memfd { fd, offset } => (libc::MAP_SHARED, fd, offset),
        MapSource::Anonymous { hugetlb } => {
            let huge = if hugetlb { libc::MAP_HUGETLB } else { 0 };
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | huge, -1, 0)
        }
    };
    if hugetlb {
        // Map anywhere first: a reservation failure then leaves our range alone.
        // SAFETY: a fresh mapping at an address of the kernel's choosing.
        let tmp = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, offset as libc::off_t) };
        if tmp == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: moves the mapping made above over our own reserved range,
        // which the caller says is unused.
        let moved = unsafe {
            libc::mremap(tmp, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, addr.as_ptr().cast::<libc::c_void>())
        };
        if moved != libc::MAP_FAILED {
            return Ok(());
        }
        // SAFETY: `tmp` is the mapping made above and is not used elsewhere.
        unsafe { libc::munmap(tmp, len) };
    }
    // SAFETY: MAP_FIXED over a range of our own reservation that the caller
    // says is unused.
    let raw =
        unsafe { libc::mmap(addr.as_ptr().cast(), len, prot, flags | libc::MAP_FIXED, fd, offset as libc::off_t) };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns a segment's range back into an inaccessible reservation, dropping
/// our mapping. Anonymous memory is freed at once; a memfd's pages are
/// freed when its last mapping and descriptor are gone (the caller closes
/// its descriptor; a reader process may still map the file, and then
/// keeps reading the old bytes, never another segment's).
///
/// # Safety
/// Nothing may access `addr..addr+len` afterwards until it is mapped again.
pub unsafe fn release_segment(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: replaces our own mapping; the caller promises no further access.
    let raw = unsafe {
        libc::mmap(
            addr.as_ptr().cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the pages of `addr..addr+len` (page aligned, inside one segment)
/// back to the OS while the mapping stays: the next access finds zeros.
/// A memfd segment (`shared`) has the file's pages punched out
/// (`MADV_REMOVE`, which fails with EPERM once the file is sealed); private
/// anonymous memory is dropped (`MADV_DONTNEED`).
///
/// # Safety
/// Nothing may rely on the contents of the range afterwards.
pub unsafe fn discard(addr: NonNull<u8>, len: usize, shared: bool) -> io::Result<()> {
    let advice = if shared { libc::MADV_REMOVE } else { libc::MADV_DONTNEED };
    // SAFETY: per the caller, the contents may go; the mapping stays valid.
    cvt(unsafe { libc::madvise(addr.as_ptr().cast(), len, advice) }).map(drop)
}

/// Allocates every page of a fresh writable mapping at once
/// (`MADV_POPULATE_WRITE`, Linux 5.14): one call instead of a fault per
/// page. Advisory: on failure (an older kernel) the pages fault in later,
/// as they would have.
///
/// # Safety
/// `addr..addr+len` must be a readable and writable mapping of ours whose
/// pages may be allocated (their contents are unchanged).
pub unsafe fn populate(addr: NonNull<u8>, len: usize) {
    // SAFETY: per the caller; populating does not change contents.
    unsafe { libc::madvise(addr.as_ptr().cast(), len, libc::MADV_POPULATE_WRITE) };
}

/// Asks for transparent huge pages on a range (`MADV_HUGEPAGE`). Advisory:
/// errors are ignored by callers.
pub fn advise_hugepage(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: madvise with MADV_HUGEPAGE does not change the contents or
    // validity of the range.
    cvt(unsafe { libc::madvise(addr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) }).map(drop)
}

/// The CPU this thread is running on, or 0 if the kernel will not say.
#[inline]
pub fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions (glibc reads it from rseq).
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        0
    } else {
        cpu as usize
    }
}

/// Number of configured CPUs (never 0).
pub fn cpu_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> io::Result<usize> {
    let s = std::fs::read_to_string("/proc/self/statm")?;
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/self/statm"))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    Ok(pages * page)
}

/// Reads a small file into `buf` without allocating (the global allocator
/// calls this during its own initialisation). Returns the bytes read.
pub fn read_small_file(path: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` is a valid C string.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just opened and is owned here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    drop(owned);
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether the kernel will back `MADV_HUGEPAGE` ranges with transparent huge
/// pages: for shmem (memfd) mappings when `shmem`, else for anonymous ones.
/// Allocation-free, see [`read_small_file`].
pub fn thp_enabled(shmem: bool) -> bool {
    let path: &std::ffi::CStr = if shmem {
        c"/sys/kernel/mm/transparent_hugepage/shmem_enabled"
    } else {
        c"/sys/kernel/mm/transparent_hugepage/enabled"
    };
    let mut buf = [0u8; 128];
    let Ok(n) = read_small_file(path, &mut buf) else { return false };
    let text = &buf[..n];
    let selected = |word: &[u8]| text.windows(word.len()).any(|w| w == word);
    !(selected(b"[never]") || selected(b"[deny]"))
}

/// Physical memory of the machine in bytes.
pub fn phys_mem_bytes() -> usize {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages < 1 || size < 1 {
        1 << 30
    } else {
        pages as usize * size as usize
    }
}

/// 64 random bits from the kernel (`getrandom`, non-blocking), mixed with
/// the clock and an address if the kernel has none to give. Allocation-free.
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: `v` is valid for 8 bytes of writes.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n == 8 {
        return v;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mut x = (ts.tv_sec as u64) << 32 ^ ts.tv_nsec as u64 ^ (&v as *const u64 as u64).rotate_left(17);
    // SplitMix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Blocks while `*word == expected` (or until woken, or spuriously).
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 that lives as long as the
    // call; a null timeout waits without limit.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ptr::null::<libc::timespec>(),
        )
    };
}

/// Wakes one thread blocked in [`futex_wait`] on `word`.
pub fn futex_wake_one(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1) };
}

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes no pointers; unknown commands fail with EINVAL.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) }
}

/// Which `membarrier` command this process can use (see [`process_barrier`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (registered): IPIs to the CPUs
    /// running this process's threads, a few microseconds.
    PrivateExpedited,
    /// `MEMBARRIER_CMD_GLOBAL`: waits for every CPU to pass a scheduling
    /// point, milliseconds.
    Global,
}

/// Registers this process for expedited private membarriers if the kernel
/// has them, else reports whether the global one works. `None`: no
/// membarrier at all (kernel older than 4.3, or a seccomp filter).
pub fn barrier_init() -> Option<Barrier> {
    let supported = membarrier(MEMBARRIER_CMD_QUERY);
    if supported < 0 {
        return None;
    }
    let supported = supported as libc::c_int;
    if supported & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED != 0
        && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    {
        return Some(Barrier::PrivateExpedited);
    }
    (supported & MEMBARRIER_CMD_GLOBAL != 0).then_some(Barrier::Global)
}

/// Makes every other running thread of the process execute a full memory
/// barrier before this returns (the heavy side of an asymmetric fence).
/// Returns false if the kernel refused.
pub fn process_barrier(kind: Barrier) -> bool {
    let cmd = match kind {
        Barrier::PrivateExpedited => MEMBARRIER_CMD_PRIVATE_EXPEDITED,
        Barrier::Global => MEMBARRIER_CMD_GLOBAL,
    };
    membarrier(cmd) == 0
}

/// Registers fork handlers (`pthread_atfork`). Call once per process.
pub fn register_atfork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) -> io::Result<()> {
    // SAFETY: the handlers are plain functions that live for the whole
    // program.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_allocating() {
        let mut buf = [0u8; 48];
        assert_eq!(numbered_name(&mut buf, "nta-seg-", 0).to_str().unwrap(), "nta-seg-0");
        assert_eq!(numbered_name(&mut buf, "nta-seg-", 4095).to_str().unwrap(), "nta-seg-4095");
        let big = numbered_name(&mut buf, "/proc/self/fd/", usize::MAX).to_str().unwrap().to_owned();
        assert!(big.ends_with("18446744073709551615"), "{big}");
    }
}
