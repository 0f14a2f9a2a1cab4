//! How a Kubernetes client reads a plain scalar.
//!
//! kubectl and the API server turn YAML into JSON with sigs.k8s.io/yaml, which uses a fork of
//! go-yaml v2: YAML 1.1 booleans (`yes`, `on`, `Off`, …), integers in base 2, 8, 10 and 16 with
//! `_` separators, and the 1.1 spellings of null. A linter that reads YAML 1.2 would miss
//! `privileged: yes`, which the cluster reads as true.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plain<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

pub fn resolve_plain(s: &str) -> Plain<'_> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Plain::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Plain::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Plain::Str(s);
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if let Some(i) = parse_int(&plain) {
        return Plain::Int(i);
    }
    if looks_like_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
    {
        return Plain::Float(f);
    }
    Plain::Str(s)
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let (radix, body) = if let Some(b) = digits.strip_prefix("0b") {
        (2, b)
    } else if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    let value = if neg { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

fn looks_like_float(s: &str) -> bool {
    // go-yaml v2's float form: ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$
    let b = s.trim_start_matches(['-', '+']).as_bytes();
    if s.len() - b.len() > 1 {
        return false;
    }
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = 0;
    if b.first() == Some(&b'.') {
        let n = digits(1);
        if n == 0 {
            return false;
        }
        i = 1 + n;
    } else {
        let n = digits(0);
        if n == 0 {
            return false;
        }
        i += n;
        if b.get(i) == Some(&b'.') {
            i += 1 + digits(i + 1);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_as_kubernetes_reads_it() {
        assert_eq!(resolve_plain("yes"), Plain::Bool(true));
        assert_eq!(resolve_plain("Off"), Plain::Bool(false));
        assert_eq!(resolve_plain("true"), Plain::Bool(true));
        assert_eq!(resolve_plain("tRue"), Plain::Str("tRue"));
        assert_eq!(resolve_plain("~"), Plain::Null);
        assert_eq!(resolve_plain("0"), Plain::Int(0));
        assert_eq!(resolve_plain("-1"), Plain::Int(-1));
        assert_eq!(resolve_plain("0x10"), Plain::Int(16));
        assert_eq!(resolve_plain("010"), Plain::Int(8));
        assert_eq!(resolve_plain("1_000"), Plain::Int(1000));
        assert_eq!(resolve_plain("1.5"), Plain::Float(1.5));
        assert_eq!(resolve_plain("1.2.3"), Plain::Str("1.2.3"));
        assert_eq!(resolve_plain("08"), Plain::Float(8.0));
        assert_eq!(resolve_plain("1e3"), Plain::Float(1000.0));
        assert_eq!(resolve_plain("1.0.0-rc1"), Plain::Str("1.0.0-rc1"));
        assert_eq!(resolve_plain("nginx"), Plain::Str("nginx"));
        // Too large for an int64: go-yaml falls back to a float.
        assert_eq!(resolve_plain("99999999999999999999"), Plain::Float(1e20));
    }
}
