//! Feeds arbitrary bytes to one connection's HTTP protocol, cut into reads
//! of a size the first byte picks, and checks what
//! `nta_examples::httpd::harness` states: no panic, only complete
//! responses, and every buffer back in the (checked) pool afterwards.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run http_conn --fuzz-dir examples/fuzz`

#![no_main]

use libfuzzer_sys::fuzz_target;
use nta_examples::httpd::harness::{check_stream, drive};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let run = drive(input, 1 + usize::from(cut % 128));
    check_stream(&run.output, true);
});
