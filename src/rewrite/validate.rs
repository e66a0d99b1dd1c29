//! Validators for the values tagflow writes, and the check that keeps a plain scalar a string.
//!
//! Hand-written rather than regexes: each grammar is a few lines, and no static regex means no
//! lazy initialisation and no `expect`.

/// Whether `s` is a valid OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[must_use]
pub fn valid_tag(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `s` is a `sha256:` (64 hex) or `sha512:` (128 hex) digest in lowercase hex.
#[must_use]
pub fn valid_digest(s: &str) -> bool {
    let hex_of = |rest: &str, len: usize| {
        rest.len() == len
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if let Some(rest) = s.strip_prefix("sha256:") {
        hex_of(rest, 64)
    } else if let Some(rest) = s.strip_prefix("sha512:") {
        hex_of(rest, 128)
    } else {
        false
    }
}

/// Whether `s` is an OCI distribution repository name, optionally led by `host[:port]`.
#[must_use]
pub fn valid_repository(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let components: Vec<&str> = s.split('/').collect();
    let Some((first, rest)) = components.split_first() else {
        return false;
    };
    let rest_ok = rest.iter().all(|c| path_component(c));
    rest_ok && (path_component(first) || (!rest.is_empty() && domain(first)))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &s[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
}

/// `host[:port]` where host is dot-separated labels or a bracketed IPv6 address.
fn domain(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') == h.ends_with(']')) => {
            (h, Some(p))
        }
        _ => (s, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
    } else {
        host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b.first() != Some(&b'-')
                && b.last() != Some(&b'-')
        })
    };
    port_ok && host_ok
}

/// Whether `s` can be written as a plain scalar and read back as the same string.
///
/// Conservative on purpose: a git SHA like `1234567` or `1e51234` written plain becomes a number
/// (Helm then renders `1.234567e+06`), so anything YAML 1.1, YAML 1.2 or Go's YAML libraries
/// might resolve to a bool, null, number or timestamp is reported as needing quotes.
#[must_use]
pub(crate) fn plain_is_string(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let safe_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '+'));
    if !safe_chars || !(first.is_ascii_alphanumeric() || first == '_') {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null"
    ) {
        return false;
    }
    !(first.is_ascii_digit() && looks_numeric(s))
}

/// Ints (binary, octal, hex, decimal, sexagesimal, with `_`), floats (incl. YAML 1.1's
/// `1.2.3`, exponents, hex floats) and date-led timestamps.
fn looks_numeric(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let all = |t: &str, ok: fn(char) -> bool| !t.is_empty() && t.chars().all(ok);
    if let Some(rest) = lower.strip_prefix("0x") {
        return all(rest, |c| {
            c.is_ascii_hexdigit() || matches!(c, '_' | '.' | 'p' | '+' | '-')
        });
    }
    if let Some(rest) = lower.strip_prefix("0b") {
        return all(rest, |c| matches!(c, '0' | '1' | '_'));
    }
    if let Some(rest) = lower.strip_prefix("0o") {
        return all(rest, |c| matches!(c, '0'..='7' | '_'));
    }
    let b = s.as_bytes();
    if b.len() >= 6
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5].is_ascii_digit()
    {
        return true;
    }
    if s.contains(':') {
        return s
            .split(':')
            .all(|part| all(part, |c| c.is_ascii_digit() || matches!(c, '_' | '.')));
    }
    // [0-9][0-9_]* ( '.' [0-9_.]* )? ( [eE] [-+]? [0-9]+ )?
    let mut rest = s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '_' | '.'));
    }
    if let Some(exp) = rest.strip_prefix(['e', 'E']) {
        let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        rest = if all(digits, |c| c.is_ascii_digit()) {
            ""
        } else {
            rest
        };
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        let cases = [
            ("a1b2c3d", true),
            ("v1.2.3-rc.1", true),
            ("_x", true),
            ("1234567", true),
            (long.as_str(), true),
            (too_long.as_str(), false),
            ("", false),
            ("-x", false),
            (".x", false),
            ("a b", false),
            ("x: y", false),
            ("{", false),
            ("a\nb", false),
            ("a:b", false),
            ("a/b", false),
            ("é", false),
        ];
        for (s, want) in cases {
            assert_eq!(valid_tag(s), want, "{s:?}");
        }
    }

    #[test]
    fn digests() {
        let h64 = "0123456789abcdef".repeat(4);
        let h128 = h64.repeat(2);
        let cases = [
            (format!("sha256:{h64}"), true),
            (format!("sha512:{h128}"), true),
            (format!("sha512:{h64}"), false),
            (format!("sha256:{}", h64.to_uppercase()), false),
            (format!("sha256:{h64}0"), false),
            (format!("sha256:{h64}\n"), false),
            (format!("md5:{h64}"), false),
            (String::new(), false),
            ("sha256:".to_string(), false),
        ];
        for (s, want) in cases {
            assert_eq!(valid_digest(&s), want, "{s:?}");
        }
    }

    #[test]
    fn repositories() {
        let cases = [
            ("registry.example.com/team/app", true),
            ("127.0.0.1:5000/team/app", true),
            ("localhost:5000/app", true),
            ("[::1]:5000/app", true),
            ("Registry.Example.com/app", true),
            ("app", true),
            ("library/nginx", true),
            ("a__b/c-d---e/f.g_h", true),
            ("team/App", false),
            ("App", false),
            ("registry.example.com:/app", false),
            ("registry.example.com:50a/app", false),
            ("-bad.example.com/app", false),
            ("host/", false),
            ("/app", false),
            ("a//b", false),
            ("a/b_", false),
            ("a/b.-c", false),
            ("a/b___c", false),
            ("a b", false),
            ("a/b:tag", false),
            ("a/b@sha256:00", false),
            ("", false),
        ];
        for (s, want) in cases {
            assert_eq!(valid_repository(s), want, "{s:?}");
        }
        assert!(!valid_repository(&format!("a/{}", "b".repeat(254))));
    }

    #[test]
    fn plain_scalars_that_stay_strings() {
        let cases = [
            ("a1b2c3d", true),
            ("v1.2.3", true),
            ("1abcdef", true),
            ("12ab34e", true),
            ("1.2.3-rc1", true),
            ("registry.example.com/team/app:1234567", true),
            ("127.0.0.1:5000/team/app", true),
            ("sha256:0123", true),
            ("_x", true),
            ("1234567", false),
            ("1e51234", false),
            ("1E5", false),
            ("1e+5", false),
            ("0x1f", false),
            ("0b101", false),
            ("0o17", false),
            ("0777", false),
            ("1_000", false),
            ("1.5", false),
            ("1.2.3", false),
            ("1:20", false),
            ("2024-01-02", false),
            ("2024-01-02t10", false),
            ("true", false),
            ("No", false),
            ("y", false),
            ("null", false),
            ("", false),
            ("a b", false),
            ("a#b", false),
            ("-a", false),
        ];
        for (s, want) in cases {
            assert_eq!(plain_is_string(s), want, "{s:?}");
        }
    }
}
