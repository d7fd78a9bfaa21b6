//! Process memory figures from the OS: what is resident, not what is mapped.
//!
//! Design notes:
//! - **RSS** comes from `/proc/self/statm` (cheap: one short read). It counts
//!   anonymous, file and shmem (memfd) pages that are mapped in and touched,
//!   and **not** hugetlb pages.
//! - **Hugetlb** pages are read from `/proc/self/smaps_rollup`
//!   (`Shared_Hugetlb + Private_Hugetlb`). They are resident the moment they
//!   are mapped (taken from the reserved pool), so a hugetlb-backed allocator
//!   would look free of cost by RSS alone.
//! - **Resident** = RSS + hugetlb: the figure every footprint column uses
//!   next to the allocators' own "held" figures.
//! - **Peak RSS** without sampling: writing `5` to `/proc/self/clear_refs`
//!   resets the kernel's high-water mark (`VmHWM` in `/proc/self/status`),
//!   so the exact peak of a run is one read at its end. Hugetlb pages are not
//!   in `VmHWM`; a run that may map them samples them instead.
//!
//! - **Footing.** The comparison runs every allocator on 4 KiB pages by
//!   default: NTA with `HugePages::Off`, and the others with transparent huge
//!   pages disabled for the process ([`disable_thp`]); with THP on (the
//!   kernel's `always` mode), a small heap in mimalloc reads as megabytes of
//!   RSS, and NTA's memfd segments get no THP at all.
//!
//! Every reader returns `None` where the file cannot be read (not Linux);
//! callers then print "n/a", never a made-up figure.

use std::fs;

/// Resident set size of this process in bytes, from `/proc/self/statm`
/// (hugetlb pages not included).
pub fn resident_bytes() -> Option<u64> {
    let statm = fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * page_bytes())
}

/// The value in kB of the first line of `text` that starts with `key`
/// (`"Key:   1234 kB"`), in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes of hugetlb pages mapped into this process, from
/// `/proc/self/smaps_rollup`.
pub fn hugetlb_bytes() -> Option<u64> {
    let rollup = fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    Some(kb_field(&rollup, "Shared_Hugetlb:")? + kb_field(&rollup, "Private_Hugetlb:")?)
}

/// One reading of this process's resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resident {
    /// RSS (statm), hugetlb pages not included.
    pub rss_bytes: u64,
    /// Hugetlb pages mapped.
    pub hugetlb_bytes: u64,
}

impl Resident {
    /// Reads both figures; `None` if either file cannot be read.
    pub fn now() -> Option<Resident> {
        Some(Resident { rss_bytes: resident_bytes()?, hugetlb_bytes: hugetlb_bytes()? })
    }

    /// Reads RSS, and hugetlb pages too when `with_hugetlb` (the smaps
    /// walk costs more than the statm read; callers skip it for allocators
    /// that never map hugetlb pages, for which it is 0).
    pub fn read(with_hugetlb: bool) -> Option<Resident> {
        let hugetlb_bytes = if with_hugetlb { hugetlb_bytes()? } else { 0 };
        Some(Resident { rss_bytes: resident_bytes()?, hugetlb_bytes })
    }

    /// RSS plus hugetlb pages.
    pub fn total_bytes(&self) -> u64 {
        self.rss_bytes + self.hugetlb_bytes
    }

    /// `self - base`, each part saturating at 0.
    pub fn since(&self, base: &Resident) -> Resident {
        Resident {
            rss_bytes: self.rss_bytes.saturating_sub(base.rss_bytes),
            hugetlb_bytes: self.hugetlb_bytes.saturating_sub(base.hugetlb_bytes),
        }
    }

    /// The part-wise maximum.
    pub fn max(&self, other: &Resident) -> Resident {
        Resident {
            rss_bytes: self.rss_bytes.max(other.rss_bytes),
            hugetlb_bytes: self.hugetlb_bytes.max(other.hugetlb_bytes),
        }
    }
}

/// Resets this process's peak-RSS mark (`VmHWM`) to the current RSS; `false`
/// when the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak RSS (`VmHWM`) in bytes since start or since the last
/// [`reset_peak_rss`]; hugetlb pages not included.
pub fn peak_rss_bytes() -> Option<u64> {
    kb_field(&fs::read_to_string("/proc/self/status").ok()?, "VmHWM:")
}

/// Turns transparent huge pages off for this process and the processes it
/// starts (`prctl(PR_SET_THP_DISABLE)`, inherited across fork and exec), so
/// that glibc, mimalloc and jemalloc run on 4 KiB pages like NTA with
/// `HugePages::Off`. `false` if the kernel refuses.
pub fn disable_thp() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // nothing but this process's THP flag.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

/// Whether THP is disabled for this process (`PR_GET_THP_DISABLE`).
pub fn thp_disabled() -> Option<bool> {
    // SAFETY: PR_GET_THP_DISABLE only reads this process's flag.
    let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    (flag >= 0).then_some(flag == 1)
}

/// The transparent-hugepage mode for anonymous memory (the bracketed word
/// of `/sys/kernel/mm/transparent_hugepage/enabled`): the footing glibc,
/// mimalloc and jemalloc run on.
pub fn thp_mode() -> Option<String> {
    bracketed(&fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?)
}

/// The transparent-hugepage mode for shmem (memfd) mappings, which is what
/// NTA's exportable segments would get with THP advice.
pub fn shmem_thp_mode() -> Option<String> {
    bracketed(&fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").ok()?)
}

/// Hugetlb pages reserved on the machine (`/proc/sys/vm/nr_hugepages`).
pub fn reserved_hugepages() -> Option<u64> {
    fs::read_to_string("/proc/sys/vm/nr_hugepages").ok()?.trim().parse().ok()
}

fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// The OS page size in bytes.
pub fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_is_positive_and_hugetlb_readable() {
        assert!(resident_bytes().unwrap() > 0);
        let now = Resident::now().unwrap();
        assert!(now.total_bytes() >= now.rss_bytes);
    }

    #[test]
    fn peak_rss_sees_a_touched_buffer_and_resets() {
        // Another test thread may move RSS a little; 64 MiB stands out.
        let mut buffer = vec![0u8; 64 << 20];
        for page in buffer.chunks_mut(4096) {
            // SAFETY: page is a valid, exclusive slice of at least one byte.
            unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 1) };
        }
        let before_drop = peak_rss_bytes().unwrap();
        assert!(before_drop >= 64 << 20);
        drop(buffer);
        if reset_peak_rss() {
            let after = peak_rss_bytes().unwrap();
            assert!(after + (32 << 20) < before_drop, "{after} vs {before_drop}");
        }
    }

    #[test]
    fn bracketed_word() {
        assert_eq!(bracketed("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(kb_field("A: 1\nVmHWM:\t  12 kB\n", "VmHWM:"), Some(12 * 1024));
    }
}
