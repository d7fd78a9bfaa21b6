//! `--filter`: a small pcap-like expression over a descriptor's flow.
//!
//! # Design notes
//!
//! The filter sees only the descriptor (never the payload), so it runs
//! before a byte is copied. Grammar (words separated by spaces; `&&`,
//! `||` and `!` are accepted for `and`, `or`, `not`):
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | primitive
//! primitive := "port" N | "host" ADDR | "rx" | "tx" | "tcp" | "udp"
//! ```
//!
//! `port N` matches either end's port, `host ADDR` either end's address
//! (IPv4 or IPv6; an IPv4-mapped IPv6 address matches its IPv4 form).
//! An empty expression matches everything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nta_net::export::proto::{Descriptor, FLAG_IPV6, FLAG_TCP, FLAG_TX};

/// A parsed filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Matches everything.
    All,
    /// Either port.
    Port(u16),
    /// Either address.
    Host(IpAddr),
    /// Received buffers.
    Rx,
    /// Transmitted buffers.
    Tx,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Negation.
    Not(Box<Filter>),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
}

/// The addresses of a descriptor: (local, peer).
pub fn addresses(d: &Descriptor) -> (IpAddr, IpAddr) {
    if d.flags & FLAG_IPV6 != 0 {
        (IpAddr::V6(Ipv6Addr::from(d.local_addr)), IpAddr::V6(Ipv6Addr::from(d.peer_addr)))
    } else {
        let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        (v4(&d.local_addr), v4(&d.peer_addr))
    }
}

fn same_host(a: IpAddr, b: IpAddr) -> bool {
    let canonical = |x: IpAddr| match x {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(x, IpAddr::V4),
        v4 => v4,
    };
    canonical(a) == canonical(b)
}

impl Filter {
    /// Parses an expression.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let spaced = text.replace('(', " ( ").replace(')', " ) ").replace('!', " ! ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        if tokens.is_empty() {
            return Ok(Filter::All);
        }
        let mut parser = Parser { tokens, at: 0 };
        let filter = parser.or()?;
        if let Some(extra) = parser.peek() {
            return Err(format!("filter: unexpected `{extra}`"));
        }
        Ok(filter)
    }

    /// Whether descriptor `d` matches.
    pub fn matches(&self, d: &Descriptor) -> bool {
        match self {
            Filter::All => true,
            Filter::Port(p) => d.local_port == *p || d.peer_port == *p,
            Filter::Host(h) => {
                let (local, peer) = addresses(d);
                same_host(local, *h) || same_host(peer, *h)
            }
            Filter::Rx => d.flags & FLAG_TX == 0,
            Filter::Tx => d.flags & FLAG_TX != 0,
            Filter::Tcp => d.flags & FLAG_TCP != 0,
            Filter::Udp => d.flags & FLAG_TCP == 0,
            Filter::Not(f) => !f.matches(d),
            Filter::And(a, b) => a.matches(d) && b.matches(d),
            Filter::Or(a, b) => a.matches(d) || b.matches(d),
        }
    }
}

struct Parser<'a> {
    tokens: Vec<&'a str>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.at).copied()
    }

    fn next(&mut self) -> Result<&'a str, String> {
        let t = self.peek().ok_or("filter: expression ends too early")?;
        self.at += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        match self.next()? {
            "not" | "!" => Ok(Filter::Not(Box::new(self.unary()?))),
            "(" => {
                let inner = self.or()?;
                match self.next()? {
                    ")" => Ok(inner),
                    t => Err(format!("filter: expected `)`, found `{t}`")),
                }
            }
            "port" => {
                let n = self.next()?;
                n.parse().map(Filter::Port).map_err(|_| format!("filter: `{n}` is not a port"))
            }
            "host" => {
                let a = self.next()?;
                a.parse().map(Filter::Host).map_err(|_| format!("filter: `{a}` is not an IP address"))
            }
            "rx" => Ok(Filter::Rx),
            "tx" => Ok(Filter::Tx),
            "tcp" => Ok(Filter::Tcp),
            "udp" => Ok(Filter::Udp),
            t => Err(format!("filter: unknown word `{t}` (port N, host ADDR, rx, tx, tcp, udp, and, or, not)")),
        }
    }
}
