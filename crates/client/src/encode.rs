//! Percent-encoding of path segments and query values.
//!
//! Everything outside RFC 3986's unreserved set is escaped, so a machine name such as
//! `host/x?y` or a filter with quotes and spaces cannot change the request's shape.
//! Query keys are written literally (`$filter`), as MDE clients send them.

use std::fmt::Write;

pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `?$filter=...&$top=...` from (literal key, raw value) pairs; empty without pairs.
pub(crate) fn query(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_but_unreserved() {
        assert_eq!(encode("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(encode("a b/c?d#e"), "a%20b%2Fc%3Fd%23e");
        assert_eq!(encode("status eq 'Pending'"), "status%20eq%20%27Pending%27");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("a+b&c=d"), "a%2Bb%26c%3Dd");
    }

    #[test]
    fn builds_a_query_string() {
        assert_eq!(query(&[]), "");
        assert_eq!(
            query(&[("$filter", "id eq 'x'".into()), ("$top", "5".into())]),
            "?$filter=id%20eq%20%27x%27&$top=5"
        );
    }
}
