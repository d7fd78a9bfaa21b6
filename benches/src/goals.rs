//! The goals of issue 10, each checked against measured figures.
//!
//! A [`Goal`] holds what was measured and a verdict computed from it; nothing
//! here knows a figure in advance. Reports print each goal under its table
//! ([`Goal::footer`]), and `nta-bench results` gathers them into the summary
//! table of RESULTS.md, so the prose can never disagree with the tables.
//!
//! | workload | goal |
//! |---|---|
//! | P1 | NTA ≤ 1.0× the faster of mimalloc and jemalloc (all in one process, interleaved) |
//! | P2 | held ÷ live ≤ 1.05, metadata counted |
//! | P3 | ≥ 97% of the capacity used at every failure (issue 2) |
//! | P4 | every cell ≤ glibc and ≤ 1.2× mimalloc |
//! | P5 | ≥ 1.0× mimalloc, median of 5 runs |
//! | P6 | footprint ÷ live ≤ the leanest peer; throughput ≥ mimalloc |
//! | real traces | time ≤ glibc and ≤ mimalloc; resident ≤ the leanest peer; no failed requests |
//!
//! "Peer" in a goal means glibc, mimalloc and jemalloc; the two reference
//! models (pow2, mempool) are not in the goals.

/// Whether a goal was met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The measured figure meets the goal.
    Met,
    /// It does not.
    Missed,
    /// Some figure the goal needs did not run or could not be read.
    NotMeasured,
}

impl Verdict {
    /// "met", "**missed**" or "not measured".
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One goal and what was measured against it.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    /// The workload or trace it belongs to ("P1", "trace nginx", ...).
    pub workload: String,
    /// The goal in words ("NTA ≤ 1.0× the faster of mimalloc and jemalloc").
    pub text: String,
    /// The measured figure(s), in words.
    pub measured: String,
    /// The verdict computed from them.
    pub verdict: Verdict,
}

impl Goal {
    /// A goal `value ≤ bound`; `what` names the value ("NTA/jemalloc").
    pub fn at_most(workload: &str, text: &str, what: &str, value: Option<f64>, bound: f64) -> Goal {
        Self::compare(workload, text, what, value, bound, true)
    }

    /// A goal `value ≥ bound`.
    pub fn at_least(workload: &str, text: &str, what: &str, value: Option<f64>, bound: f64) -> Goal {
        Self::compare(workload, text, what, value, bound, false)
    }

    fn compare(workload: &str, text: &str, what: &str, value: Option<f64>, bound: f64, at_most: bool) -> Goal {
        let (measured, verdict) = match value {
            None => (format!("{what}: not measured"), Verdict::NotMeasured),
            Some(v) if (at_most && v <= bound) || (!at_most && v >= bound) => (format!("{what} {v:.3}"), Verdict::Met),
            Some(v) => {
                let by = if at_most { v / bound - 1.0 } else { 1.0 - v / bound };
                let by = if by.is_finite() { format!(", missed by {:.1}%", by * 100.0) } else { String::new() };
                (format!("{what} {v:.3}{by}"), Verdict::Missed)
            }
        };
        Goal { workload: workload.to_string(), text: text.to_string(), measured, verdict }
    }

    /// A goal that `count` (of something bad, named by `what`) is zero.
    pub fn none(workload: &str, text: &str, what: &str, count: Option<u64>) -> Goal {
        let (measured, verdict) = match count {
            None => (format!("{what}: not measured"), Verdict::NotMeasured),
            Some(0) => (format!("{what}: 0"), Verdict::Met),
            Some(n) => (format!("{what}: {n}"), Verdict::Missed),
        };
        Goal { workload: workload.to_string(), text: text.to_string(), measured, verdict }
    }

    /// A goal that every one of `total` checks passes; `misses` lists the
    /// failing ones in words.
    pub fn every(workload: &str, text: &str, total: usize, misses: &[String]) -> Goal {
        let (measured, verdict) = if total == 0 {
            ("not measured".to_string(), Verdict::NotMeasured)
        } else if misses.is_empty() {
            (format!("all {total} pass"), Verdict::Met)
        } else {
            (format!("{} of {total} fail: {}", misses.len(), misses.join("; ")), Verdict::Missed)
        };
        Goal { workload: workload.to_string(), text: text.to_string(), measured, verdict }
    }

    /// The line printed under a table.
    pub fn footer(&self) -> String {
        format!("Goal {}: {} ({})", self.text, self.verdict.text(), self.measured)
    }
}

/// The smallest of the values that are present, with its label.
pub fn leanest<'a>(values: impl IntoIterator<Item = (&'a str, Option<f64>)>) -> Option<(&'a str, f64)> {
    values.into_iter().filter_map(|(label, value)| value.map(|v| (label, v))).min_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_figures() {
        assert_eq!(Goal::at_most("P1", "t", "x", Some(0.99), 1.0).verdict, Verdict::Met);
        let missed = Goal::at_most("P1", "t", "x", Some(1.07), 1.0);
        assert_eq!(missed.verdict, Verdict::Missed);
        assert!(missed.measured.contains("missed by 7.0%"), "{}", missed.measured);
        assert_eq!(Goal::at_least("P5", "t", "x", Some(0.5), 1.0).verdict, Verdict::Missed);
        assert_eq!(Goal::at_least("P5", "t", "x", None, 1.0).verdict, Verdict::NotMeasured);
        assert_eq!(Goal::every("P4", "t", 3, &[]).verdict, Verdict::Met);
        assert_eq!(Goal::every("P4", "t", 3, &["a".into()]).verdict, Verdict::Missed);
        assert_eq!(Goal::none("T", "t", "refused", Some(0)).verdict, Verdict::Met);
        assert_eq!(Goal::none("T", "t", "refused", Some(6)).measured, "refused: 6");
        assert_eq!(leanest([("a", Some(2.0)), ("b", None), ("c", Some(1.5))]), Some(("c", 1.5)));
    }
}
