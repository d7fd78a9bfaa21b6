//! UDP echo server on the epoll, io_uring or tokio backend.
//! `echo-udp --backend uring --addr 127.0.0.1:7007 [--buffers nta|heap] [--seconds N]`

fn main() {
    if let Err(e) = nta_examples::echo_main(nta_net::Transport::Udp) {
        eprintln!("{e}");
        std::process::exit(2);
    }
}
