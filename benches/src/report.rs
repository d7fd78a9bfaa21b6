//! Report formatting: markdown tables for people, JSON lines for machines.
//!
//! The JSON writer is a few lines rather than a dependency: every record is
//! a flat object of numbers, strings, booleans, nulls and arrays.

use std::fmt::{self, Write as _};

/// A markdown table with a title and notes under it.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Heading (written as `### title`).
    pub title: String,
    /// Lines printed between the heading and the table.
    pub notes: Vec<String>,
    /// Column headers.
    pub headers: Vec<String>,
    /// Cells, one vector per row.
    pub rows: Vec<Vec<String>>,
    /// Lines printed after the table.
    pub footer: Vec<String>,
}

impl Table {
    /// A table with `title` and `headers` and no rows yet.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self { title: title.into(), headers: headers.iter().map(|h| h.to_string()).collect(), ..Self::default() }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n", self.title);
        for note in &self.notes {
            let _ = writeln!(out, "{note}  ");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "| {} |", self.headers.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(self.headers.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if !self.footer.is_empty() {
            out.push('\n');
            for line in &self.footer {
                let _ = writeln!(out, "{line}  ");
            }
        }
        out
    }
}

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An unsigned integer.
    Int(u64),
    /// A float (non-finite values are written as `null`).
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in insertion order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from key/value pairs.
    pub fn obj(pairs: Vec<(&str, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(key, value)| (key.to_string(), value)).collect())
    }

    /// A string value.
    pub fn str(text: impl Into<String>) -> Json {
        Json::Str(text.into())
    }

    /// `Int` or `Null`.
    pub fn opt_int(value: Option<u64>) -> Json {
        value.map_or(Json::Null, Json::Int)
    }

    /// `Num` or `Null`.
    pub fn opt_num(value: Option<f64>) -> Json {
        value.map_or(Json::Null, Json::Num)
    }

    /// The value of `key` in an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, value)| value),
            _ => None,
        }
    }

    /// A number as `f64` (`Int` or finite `Num`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Json::Int(value) => Some(value as f64),
            Json::Num(value) if value.is_finite() => Some(value),
            _ => None,
        }
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(text) => Some(text),
            _ => None,
        }
    }
}

fn write_json_string(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_char('"')?;
    for ch in text.chars() {
        match ch {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(value) => write!(f, "{value}"),
            Json::Int(value) => write!(f, "{value}"),
            Json::Num(value) if value.is_finite() => write!(f, "{value}"),
            Json::Num(_) => f.write_str("null"),
            Json::Str(text) => write_json_string(f, text),
            Json::Arr(items) => {
                f.write_char('[')?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Json::Obj(pairs) => {
                f.write_char('{')?;
                for (index, (key, value)) in pairs.iter().enumerate() {
                    if index > 0 {
                        f.write_char(',')?;
                    }
                    write_json_string(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_char('}')
            }
        }
    }
}

/// `numerator / denominator` when both exist and the denominator is not 0.
pub fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d != 0.0 && n.is_finite() && d.is_finite() => Some(n / d),
        _ => None,
    }
}

/// A ratio with two decimals, or `n/a`.
pub fn fmt_ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"))
}

/// A float with `decimals` decimals, or `n/a`.
pub fn fmt_num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

/// Bytes as MiB with one decimal, or `n/a`.
pub fn fmt_mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_string(), |b| format!("{:.1}", b as f64 / (1u64 << 20) as f64))
}

/// A fraction as a percentage with one decimal.
pub fn fmt_percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_orders() {
        let value = Json::obj(vec![
            ("a", Json::Int(1)),
            ("b", Json::str("x\"y\n")),
            ("c", Json::Arr(vec![Json::Null, Json::Bool(true), Json::Num(0.5), Json::Num(f64::NAN)])),
        ]);
        assert_eq!(value.to_string(), r#"{"a":1,"b":"x\"y\n","c":[null,true,0.5,null]}"#);
    }

    #[test]
    fn markdown_table_has_header_rule_and_rows() {
        let mut table = Table::new("T", &["x", "y"]);
        table.row(vec!["1".into(), "2".into()]);
        let text = table.to_markdown();
        assert!(text.contains("| x | y |\n|---|---|\n| 1 | 2 |\n"), "{text}");
    }

    #[test]
    fn ratio_needs_both_sides() {
        assert_eq!(ratio(Some(1.0), Some(2.0)), Some(0.5));
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }
}
