//! Process memory figures from the OS, for the RSS-delta footprint.

/// Resident set size of this process in bytes, from `/proc/self/statm`;
/// `None` where that file cannot be read (not Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * page_bytes())
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
    #[test]
    fn resident_is_positive() {
        assert!(super::resident_bytes().unwrap() > 0);
    }
}
