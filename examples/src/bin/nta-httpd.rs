//! `nta-httpd`: the web server on NTA buffers. `nta-httpd --help` lists the
//! flags; the logic lives in `nta_examples::httpd`.

use clap::Parser;

fn main() {
    let args = nta_examples::httpd::HttpdArgs::parse();
    if let Err(e) = nta_examples::httpd::httpd_main(args) {
        eprintln!("nta-httpd: {e}");
        std::process::exit(2);
    }
}
