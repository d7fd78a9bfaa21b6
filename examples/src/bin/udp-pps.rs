//! Packets per second of a UDP echo over loopback, on each backend, with NTA
//! buffers against `Vec` buffers. Prints a markdown table.
//! `udp-pps [--seconds-per-run 1] [--sizes 64,1400,16384] [--window 32] [--rounds 3]
//!  [--backends epoll,uring,uring-zc,tokio] [--zc-table 0|1]`

fn main() {
    if let Err(e) = nta_examples::pps::pps_main(std::env::args().skip(1)) {
        eprintln!("{e}");
        std::process::exit(2);
    }
}
