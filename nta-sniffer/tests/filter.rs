//! `--filter` parsing and matching.

use nta_net::export::proto::{Descriptor, FLAG_IPV6, FLAG_TCP, FLAG_TX};
use nta_sniffer::filter::Filter;

fn v4(tx: bool, local_port: u16, peer_port: u16, peer: [u8; 4]) -> Descriptor {
    let mut peer_addr = [0u8; 16];
    peer_addr[..4].copy_from_slice(&peer);
    let mut local_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    Descriptor {
        flags: FLAG_TCP | if tx { FLAG_TX } else { 0 },
        local_port,
        peer_port,
        local_addr,
        peer_addr,
        ..Default::default()
    }
}

#[test]
fn primitives_match() {
    let d = v4(false, 80, 40000, [10, 0, 0, 7]);
    let yes = |f: &str| Filter::parse(f).unwrap().matches(&d);
    assert!(yes(""));
    assert!(yes("port 80") && yes("port 40000") && !yes("port 81"));
    assert!(yes("host 10.0.0.7") && yes("host 127.0.0.1") && !yes("host 10.0.0.8"));
    assert!(yes("host ::ffff:10.0.0.7"));
    assert!(yes("rx") && !yes("tx") && yes("tcp") && !yes("udp"));
    assert!(yes("rx and port 80") && !yes("tx and port 80"));
    assert!(yes("tx or port 80") && !yes("tx || port 81"));
    assert!(yes("not tx") && yes("! ( tx or udp )") && yes("(port 1 or port 80) and rx"));
    assert!(yes("rx && !udp"));
}

#[test]
fn ipv6_hosts_match() {
    let mut d = v4(true, 80, 1, [0; 4]);
    d.flags |= FLAG_IPV6;
    d.peer_addr = "2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let f = Filter::parse("host 2001:db8::5 and tx").unwrap();
    assert!(f.matches(&d));
    assert!(!Filter::parse("host 2001:db8::6").unwrap().matches(&d));
}

#[test]
fn bad_expressions_are_refused_with_a_message() {
    for bad in ["port", "port banana", "port 70000", "host 1.2.3", "rx and", "(rx", "rx)", "bogus", "rx rx", "not"] {
        let e = Filter::parse(bad).unwrap_err();
        assert!(e.starts_with("filter:"), "{bad}: {e}");
    }
}
