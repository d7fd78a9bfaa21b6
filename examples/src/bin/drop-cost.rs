//! What dropping a `PacketBuf` costs on the allocating thread and on another
//! thread (the remote-free path), and what the owner pays later to drain the
//! remote frees. `drop-cost [--buffers 100000] [--bytes 1500]`

fn main() {
    if let Err(e) = nta_examples::drop_cost::drop_cost_main(std::env::args().skip(1)) {
        eprintln!("{e}");
        std::process::exit(2);
    }
}
