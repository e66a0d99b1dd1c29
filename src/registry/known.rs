//! What tagflow has learnt from its registries, held compactly: repository → tag → digest, and
//! (digest, platform) → build time and revision.
//!
//! An idle cycle looks up every listed tag here (10,000 at 100 repositories × 100 tags), and a
//! `once` loads all of it from the work dir first, so lookups borrow (`&str` in, no allocation)
//! and entries are small: a digest is its 32 bytes, a platform a shared index, a repository name
//! is stored once for all its tags. 10,000 tags take ~2 MB instead of ~5 MB as strings.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};

use super::ImageMeta;

/// A content digest (`sha256:<64 hex>` or `sha512:<128 hex>`) as its raw bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PackedDigest {
    /// SHA-256, the digest of nearly every image.
    Sha256([u8; 32]),
    /// SHA-512 (boxed: rare, and it would double every entry's size).
    Sha512(Box<[u8; 64]>),
}

impl PackedDigest {
    /// The digest `s` spells; `None` unless it is a valid lowercase `sha256:`/`sha512:` digest.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            let mut out = [0u8; 32];
            decode_lower_hex(hex, &mut out).then_some(Self::Sha256(out))
        } else if let Some(hex) = s.strip_prefix("sha512:") {
            let mut out = [0u8; 64];
            decode_lower_hex(hex, &mut out).then(|| Self::Sha512(Box::new(out)))
        } else {
            None
        }
    }
}

/// Lowercase hex only, as digests are written (`valid_digest` refuses uppercase too).
fn decode_lower_hex(hex: &str, out: &mut [u8]) -> bool {
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    if hex.len() != 2 * out.len() {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

impl fmt::Display for PackedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (alg, bytes): (&str, &[u8]) = match self {
            Self::Sha256(b) => ("sha256", b),
            Self::Sha512(b) => ("sha512", &b[..]),
        };
        f.write_str(alg)?;
        f.write_str(":")?;
        for b in bytes {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PackedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Build time and revision label of one platform's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Image config `created`.
    pub created: Option<DateTime<Utc>>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<Box<str>>,
}

/// One remembered resolution, borrowed from [`Known`] (the unit the cache file stores).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Canonical repository.
    pub repository: &'a str,
    /// Tag.
    pub tag: &'a str,
    /// Platform the metadata was read for.
    pub platform: &'a str,
    /// Digest the tag pointed at.
    pub digest: &'a PackedDigest,
    /// Build time and revision.
    pub meta: &'a Meta,
}

/// The remembered tags and image metadata of every registry.
#[derive(Debug, Default)]
pub struct Known {
    /// Canonical repository → tag → digest.
    tags: HashMap<Box<str>, HashMap<Box<str>, PackedDigest>>,
    /// Platforms seen, so each entry holds an index instead of a string.
    platforms: Vec<Box<str>>,
    /// (digest, platform index) → metadata. Content-addressed, so never stale.
    metas: HashMap<(PackedDigest, u16), Meta>,
}

impl Known {
    fn platform(&self, platform: &str) -> Option<u16> {
        self.platforms
            .iter()
            .position(|p| &**p == platform)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn platform_or_add(&mut self, platform: &str) -> Option<u16> {
        if let Some(i) = self.platform(platform) {
            return Some(i);
        }
        // A registry cannot make this grow past what images declare; the bound is a guard.
        let i = u16::try_from(self.platforms.len()).ok()?;
        self.platforms.push(platform.into());
        Some(i)
    }

    /// The digest `repository:tag` pointed at when last resolved.
    pub fn digest(&self, repository: &str, tag: &str) -> Option<&PackedDigest> {
        self.tags.get(repository)?.get(tag)
    }

    /// Metadata of `digest` for `platform`.
    pub fn meta(&self, digest: &PackedDigest, platform: &str) -> Option<&Meta> {
        let p = self.platform(platform)?;
        self.metas.get(&(digest.clone(), p))
    }

    /// The build time of `repository:tag` on `platform` (itself `None` when the image does not
    /// say), or `None` when a request is needed.
    pub fn created(
        &self,
        repository: &str,
        tag: &str,
        platform: &str,
    ) -> Option<Option<DateTime<Utc>>> {
        let digest = self.digest(repository, tag)?;
        Some(self.meta(digest, platform)?.created)
    }

    /// Everything known of `repository:tag` on `platform`, or `None` when a request is needed.
    pub fn lookup(&self, repository: &str, tag: &str, platform: &str) -> Option<ImageMeta> {
        let digest = self.digest(repository, tag)?;
        let meta = self.meta(digest, platform)?;
        Some(ImageMeta {
            digest: digest.to_string(),
            created: meta.created,
            revision: meta.revision.as_deref().map(str::to_owned),
        })
    }

    /// Remember that `repository:tag` points at `digest`; whether that is news.
    pub fn set_tag(&mut self, repository: &str, tag: &str, digest: PackedDigest) -> bool {
        let tags = match self.tags.get_mut(repository) {
            Some(t) => t,
            None => self.tags.entry(repository.into()).or_default(),
        };
        match tags.get_mut(tag) {
            Some(d) if *d == digest => false,
            Some(d) => {
                *d = digest;
                true
            }
            None => {
                tags.insert(tag.into(), digest);
                true
            }
        }
    }

    /// Remember `digest`'s metadata for `platform`; whether that is news.
    pub fn set_meta(&mut self, digest: PackedDigest, platform: &str, meta: Meta) -> bool {
        let Some(p) = self.platform_or_add(platform) else {
            return false;
        };
        self.metas.insert((digest, p), meta.clone()).as_ref() != Some(&meta)
    }

    /// Every tag with its metadata for each platform known for its digest, sorted by
    /// repository, platform and tag (so an unchanged store always saves the same bytes).
    pub fn entries(&self) -> Vec<Entry<'_>> {
        // Platforms per digest once, so this is linear in tags + metadata, not their product.
        let mut by_digest: HashMap<&PackedDigest, Vec<(u16, &Meta)>> = HashMap::new();
        for ((digest, p), meta) in &self.metas {
            by_digest.entry(digest).or_default().push((*p, meta));
        }
        let mut out = Vec::new();
        let repos: BTreeMap<&str, &HashMap<Box<str>, PackedDigest>> =
            self.tags.iter().map(|(r, t)| (&**r, t)).collect();
        for (repository, tags) in repos {
            let start = out.len();
            for (tag, digest) in tags {
                for (p, meta) in by_digest.get(digest).into_iter().flatten() {
                    out.push(Entry {
                        repository,
                        tag,
                        platform: &self.platforms[usize::from(*p)],
                        digest,
                        meta,
                    });
                }
            }
            out[start..].sort_unstable_by(|a, b| (a.platform, a.tag).cmp(&(b.platform, b.tag)));
        }
        out
    }

    /// Tags remembered (with or without metadata).
    pub fn tag_count(&self) -> usize {
        self.tags.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn digests_round_trip_and_only_valid_ones_parse() {
        let d = PackedDigest::parse(D1).expect("valid");
        assert_eq!(d.to_string(), D1);
        let long = format!("sha512:{}", "0f".repeat(64));
        assert_eq!(
            PackedDigest::parse(&long).expect("sha512").to_string(),
            long
        );
        for bad in [
            "",
            "sha256:",
            &D1[..D1.len() - 1],
            &D1.to_uppercase(),
            &D1.replace("sha256", "md5"),
            &format!("{D1}0"),
            "sha256:zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "sha256:ä0112233445566778899aabbccddeeff00112233445566778899aabbccddeef",
        ] {
            assert!(PackedDigest::parse(bad).is_none(), "{bad:?}");
            assert!(!crate::rewrite::valid_digest(bad), "agrees: {bad:?}");
        }
    }

    #[test]
    fn a_tag_is_found_by_borrowed_names_with_its_platforms_metadata() {
        let mut k = Known::default();
        let d = PackedDigest::parse(D1).expect("valid");
        assert!(k.set_tag("r.example.com/app", "a1b2c3d", d.clone()));
        assert!(
            !k.set_tag("r.example.com/app", "a1b2c3d", d.clone()),
            "no news"
        );
        let meta = Meta {
            created: Some(DateTime::from_timestamp(1_700_000_000, 5).expect("time")),
            revision: Some("abc".into()),
        };
        assert!(k.set_meta(d.clone(), "linux/amd64", meta.clone()));
        assert!(
            !k.set_meta(d.clone(), "linux/amd64", meta.clone()),
            "no news"
        );
        let found = k
            .lookup("r.example.com/app", "a1b2c3d", "linux/amd64")
            .expect("known");
        assert_eq!(found.digest, D1);
        assert_eq!(found.created, meta.created);
        assert_eq!(found.revision.as_deref(), Some("abc"));
        assert!(
            k.lookup("r.example.com/app", "a1b2c3d", "linux/arm64")
                .is_none()
        );
        assert!(
            k.lookup("r.example.com/other", "a1b2c3d", "linux/amd64")
                .is_none()
        );
        // A moved tag is news, and the old digest's metadata stays (content-addressed).
        let d2 = PackedDigest::parse(&D1.replace("00", "11")).expect("valid");
        assert!(k.set_tag("r.example.com/app", "a1b2c3d", d2));
        assert!(
            k.lookup("r.example.com/app", "a1b2c3d", "linux/amd64")
                .is_none()
        );
        assert!(k.meta(&d, "linux/amd64").is_some());
    }

    #[test]
    fn entries_are_sorted_and_list_every_platform_of_a_digest() {
        let mut k = Known::default();
        let d = PackedDigest::parse(D1).expect("valid");
        let m = Meta {
            created: None,
            revision: None,
        };
        for (repo, tag) in [("b/x", "2"), ("a/y", "9"), ("b/x", "1")] {
            k.set_tag(repo, tag, d.clone());
        }
        k.set_meta(d.clone(), "linux/arm64", m.clone());
        k.set_meta(d, "linux/amd64", m);
        let listed: Vec<(&str, &str, &str)> = k
            .entries()
            .iter()
            .map(|e| (e.repository, e.platform, e.tag))
            .collect();
        assert_eq!(
            listed,
            [
                ("a/y", "linux/amd64", "9"),
                ("a/y", "linux/arm64", "9"),
                ("b/x", "linux/amd64", "1"),
                ("b/x", "linux/amd64", "2"),
                ("b/x", "linux/arm64", "1"),
                ("b/x", "linux/arm64", "2"),
            ]
        );
        assert_eq!(k.tag_count(), 3);
    }
}
