//! `nta-sniffer`: parses the command line and hands it to the library.

use clap::Parser;

fn main() {
    std::process::exit(nta_sniffer::cli::run(nta_sniffer::cli::Cli::parse()));
}
