//! An invalid free panics only after the pool's locks are released. Here a
//! one-shard pool is this binary's global allocator, so the panic machinery
//! allocates its message from the very pool whose shard the free was
//! using: had the shard still been held, the allocation would spin on it
//! forever. The scenario runs in a child process with a time limit.

use nta_core::{HugePages, Pool};
use std::alloc::{GlobalAlloc, Layout, System};
use std::process::{Command, Stdio};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static POOL: OnceLock<Pool> = OnceLock::new();

/// The pool once built; `System` before (building the pool allocates).
struct OneShard;

// SAFETY: alloc returns a fresh block of at least `size` bytes at `align`
// (granule-aligned pool chunks serve align <= 32); dealloc routes each
// pointer back to the allocator that made it.
unsafe impl GlobalAlloc for OneShard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match POOL.get() {
            Some(p) if layout.align() <= 32 => p.alloc(layout.size()).map_or(std::ptr::null_mut(), NonNull::as_ptr),
            // SAFETY: forwarded.
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match POOL.get() {
            // SAFETY: a live chunk of the pool, given up.
            Some(p) if p.contains(ptr) => unsafe { p.free_sized(NonNull::new_unchecked(ptr), layout.size()) },
            // SAFETY: made by System.
            _ => unsafe { System.dealloc(ptr, layout) },
        }
    }
}

#[global_allocator]
static GLOBAL: OneShard = OneShard;

#[test]
fn child_entry() {
    let Ok(scenario) = std::env::var("NTA_PANIC_CHILD") else { return };
    let pool =
        POOL.get_or_init(|| Pool::builder().capacity(16 << 20).shards(1).hugepages(HugePages::Off).build().unwrap());
    let a = pool.alloc(9000).unwrap();
    // SAFETY: deliberately invalid, each way: the check fails with the only
    // shard held (or, since the fix, just before taking it), and the panic
    // message needs the global allocator, which is this pool.
    unsafe {
        pool.free(a);
        match scenario.as_str() {
            "free" => pool.free(a),
            "shrink" => pool.shrink(a, 100),
            _ => {
                let _ = pool.usable_size(a);
            }
        }
    }
    std::process::exit(3);
}

#[test]
fn the_panic_message_can_allocate_from_the_same_pool() {
    for scenario in ["free", "shrink", "usable_size"] {
        run_child(scenario);
    }
}

fn run_child(scenario: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("NTA_PANIC_CHILD", scenario)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("{scenario}: the child hung: the panic deadlocked on the shard lock");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success() && status.code() != Some(3), "{scenario}: status {status:?}");
    assert!(stderr.contains("nta-core: invalid free of 0x") && stderr.contains("double free"), "{scenario}: {stderr}");
}
