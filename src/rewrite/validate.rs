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
/// The reader that matters is Helm's: `sigs.k8s.io/yaml` on Go's yaml.v2, YAML 1.1 rules (Flux's
/// kyaml writes the same way). A git SHA like `1234567` written plain becomes a number (Helm then
/// renders `1.234567e+06`), so whatever yaml.v2 resolves to a bool, null, int or float needs
/// quotes; `1.2.3`, `2024.07.15` or `v1.2.3` stay strings there and stay plain here, so a
/// Flux-managed file does not churn on its first update. yaml.v2 hands timestamps to Helm as
/// strings, so `2024-01-02` needs no quotes either.
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
    !(yaml_v2_keyword(s) || (first.is_ascii_digit() && yaml_v2_number(s)))
}

/// yaml.v2's resolve table: bools, nulls and the float keywords, case variants exactly as listed.
fn yaml_v2_keyword(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "~", "null", "Null", "NULL",
        ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    KEYWORDS.contains(&s)
}

/// yaml.v2's number rules: with `_` removed, Go's `ParseInt(s, 0, 64)` or `ParseUint` (decimal,
/// `0x`, `0o`, `0b`, leading-`0` octal; an out-of-range int is still a number), else the float
/// pattern `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn yaml_v2_number(s: &str) -> bool {
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    let digits = plain.strip_prefix(['+', '-']).unwrap_or(&plain);
    let all = |t: &str, ok: fn(u8) -> bool| !t.is_empty() && t.bytes().all(ok);
    let lower = digits.to_ascii_lowercase();
    let int = if let Some(hex) = lower.strip_prefix("0x") {
        all(hex, |b| b.is_ascii_hexdigit())
    } else if let Some(oct) = lower.strip_prefix("0o") {
        all(oct, |b| (b'0'..=b'7').contains(&b))
    } else if let Some(bin) = lower.strip_prefix("0b") {
        all(bin, |b| b == b'0' || b == b'1')
    } else if let Some(oct) = digits.strip_prefix('0').filter(|r| !r.is_empty()) {
        all(oct, |b| (b'0'..=b'7').contains(&b))
    } else {
        all(digits, |b| b.is_ascii_digit())
    };
    int || yaml_v2_float(s)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` on the text as written.
fn yaml_v2_float(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = digits(0);
    if i == 0 {
        if b.first() != Some(&b'.') || digits(1) == 0 {
            return false;
        }
        i = 1 + digits(1);
    } else if b.get(i) == Some(&b'.') {
        i += 1 + digits(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
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
            ("6.7.1", true),
            ("1.13.0", true),
            ("1.2.3", true),
            ("2024.07.15", true),
            ("2024-01-02", true),
            ("1:20", true),
            ("1abcdef", true),
            ("12ab34e", true),
            ("1e5x", true),
            ("0x1g", true),
            ("089", false),
            ("08a", true),
            ("1.2.3-rc1", true),
            ("yEs", true),
            ("registry.example.com/team/app:1234567", true),
            ("127.0.0.1:5000/team/app", true),
            ("sha256:0123", true),
            ("_x", true),
            ("_1", true),
            ("1234567", false),
            ("12345678901234567890123", false),
            ("1e10", false),
            ("1e51234", false),
            ("1E5", false),
            ("1e+5", false),
            ("1.", false),
            ("0x1F", false),
            ("0b101", false),
            ("0o17", false),
            ("0777", false),
            ("1_000", false),
            ("1.5", false),
            ("true", false),
            ("TRUE", false),
            ("No", false),
            ("y", false),
            ("yes", false),
            ("on", false),
            ("OFF", false),
            ("null", false),
            ("~", false),
            (".inf", false),
            ("", false),
            ("a b", false),
            ("a#b", false),
            ("-a", false),
            ("[::1]:5000/app", false),
        ];
        for (s, want) in cases {
            assert_eq!(plain_is_string(s), want, "{s:?}");
        }
        for s in [".inf", ".NaN", "-.INF", "~", "<<"] {
            assert!(yaml_v2_keyword(s), "{s:?}");
        }
        for s in ["1e10", ".5", "+1", "-0x1f", "1.e5"] {
            assert!(yaml_v2_number(s), "{s:?}");
        }
    }
}
