//! The statistics text of a [`crate::client::Event::Stats`] reply.
//!
//! `name value` lines, the names of nta-httpd's `/stats` without the
//! `nta_` prefix. Lines that are not two printable fields are skipped;
//! names and values are kept as text (values may be floats or carry
//! labels), control characters removed.

use crate::error::printable;

/// Parsed statistics, in the order sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `(name, value)` pairs.
    pub entries: Vec<(String, String)>,
}

impl Stats {
    /// Parses the text (at most 1000 lines are kept).
    pub fn parse(text: &str) -> Stats {
        let entries = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut fields = l.split_whitespace();
                let (name, value) = (fields.next()?, fields.next()?);
                fields.next().is_none().then(|| (printable(name), printable(value)))
            })
            .take(1000)
            .collect();
        Stats { entries }
    }

    /// The value of `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}
