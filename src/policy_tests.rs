use super::*;

fn policy(yaml: &str) -> Policy {
    let c: PolicyConfig = serde_yaml::from_str(yaml).expect("policy yaml");
    Policy::compile(&c).expect("compiles")
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    t("2024-01-02T00:00:00Z")
}

fn built(pairs: &[(&str, &str)]) -> BTreeMap<String, Facts> {
    pairs
        .iter()
        .map(|(tag, c)| {
            (
                (*tag).to_owned(),
                Facts {
                    created: Some(t(c)),
                    commit_rank: None,
                },
            )
        })
        .collect()
}

#[test]
fn built_order_picks_newest_creation_time() {
    let p = policy("{tags: '^[0-9a-f]{7}$', order: built}");
    let q = p.screen(["a1b2c3d", "0f1e2d3", "b2c3d4e", "latest", "a1b2c3d4"]);
    assert_eq!(q.qualified.len(), 3);
    let facts = built(&[
        ("a1b2c3d", "2024-01-01T10:00:00Z"),
        ("0f1e2d3", "2024-01-01T12:00:00Z"),
        ("b2c3d4e", "2024-01-01T11:00:00Z"),
    ]);
    let d = p.select(&q, &facts, now()).expect("a winner");
    assert_eq!(d.tag, "0f1e2d3");
    assert_eq!(
        d.reason,
        Reason::NewestBuild {
            created: t("2024-01-01T12:00:00Z"),
            tied_with: vec![]
        }
    );
}

#[test]
fn built_ties_are_broken_by_tag_name_and_reported() {
    let p = policy("{tags: '^[0-9a-f]{7}$', order: built}");
    let q = p.screen(["bbbbbbb", "aaaaaaa", "ccccccc"]);
    let facts = built(&[
        ("aaaaaaa", "2024-01-01T12:00:00Z"),
        ("bbbbbbb", "2024-01-01T12:00:00Z"),
        ("ccccccc", "2024-01-01T11:00:00Z"),
    ]);
    let d = p.select(&q, &facts, now()).expect("a winner");
    assert_eq!(d.tag, "bbbbbbb");
    assert!(
        d.reason.to_string().contains("tied with aaaaaaa"),
        "{}",
        d.reason
    );
}

#[test]
fn built_without_times_is_no_candidate() {
    let p = policy("{tags: '.*', order: built}");
    let q = p.screen(["x1"]);
    let e = p.select(&q, &BTreeMap::new(), now()).expect_err("none");
    assert_eq!(
        e.to_string(),
        "no tag qualifies: the registry listed 1 tag, 1 matched `.*`; \
         1 with no build time (image config `created`): x1"
    );
}

#[test]
fn git_order_uses_commit_rank_and_skips_off_branch_tags() {
    let p = policy("{tags: '^[0-9a-f]{7}$', order: git}");
    let q = p.screen(["aaaaaaa", "bbbbbbb", "ccccccc"]);
    let mut facts = BTreeMap::new();
    facts.insert(
        "aaaaaaa".to_owned(),
        Facts {
            created: None,
            commit_rank: Some(Ok(3)),
        },
    );
    facts.insert(
        "bbbbbbb".to_owned(),
        Facts {
            created: None,
            commit_rank: Some(Ok(1)),
        },
    );
    facts.insert(
        "ccccccc".to_owned(),
        Facts {
            created: None,
            commit_rank: Some(Err("not on branch main".into())),
        },
    );
    let d = p.select(&q, &facts, now()).expect("winner");
    assert_eq!(d.tag, "bbbbbbb");
    assert_eq!(d.reason, Reason::NewestCommit { behind_head: 1 });
    assert_eq!(
        d.skipped,
        vec![("ccccccc".to_owned(), "not on branch main".to_owned())]
    );
}

#[test]
fn table_of_orderings() {
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        (
            "{tags: '.*', order: semver}",
            &["1.2.3", "v1.10.0", "1.9.9", "1234567", "junk"],
            Some("v1.10.0"),
        ),
        (
            "{tags: '.*', order: semver, range: '<1.10'}",
            &["1.2.3", "v1.10.0", "1.9.9"],
            Some("1.9.9"),
        ),
        (
            "{tags: '.*', order: semver, range: '>=1.0.0 <2.0.0 || 3.1.x'}",
            &["1.2.3", "v1.10.0", "2.5.0", "3.1.4", "3.2.0", "3.1.5-rc.1"],
            Some("3.1.4"),
        ),
        (
            "{tags: '.*', order: semver, range: '1.2 - 1.4.5'}",
            &["1.4.5", "1.4.6", "1.1.0"],
            Some("1.4.5"),
        ),
        ("{tags: '.*', order: semver}", &["1234567", "7654321"], None),
        (
            "{tags: '.*', order: semver, allowNumericSemver: true}",
            &["1.0.0", "2.0.0-rc.1", "1.5.0"],
            Some("2.0.0-rc.1"),
        ),
        (
            "{tags: '.*', order: semver, allowNumericSemver: true}",
            &["1.2.3", "1234567"],
            Some("1234567"),
        ),
        (
            "{tags: '.*', order: numerical}",
            &["9", "10", "100", "x"],
            Some("100"),
        ),
        (
            "{tags: '.*', order: numerical, direction: desc}",
            &["9", "10", "100"],
            Some("9"),
        ),
        (
            "{tags: '.*', order: alphabetical}",
            &["a", "c", "b"],
            Some("c"),
        ),
        (
            "{tags: '.*', order: alphabetical, direction: desc}",
            &["a", "c", "b"],
            Some("a"),
        ),
        (
            "{tags: '^main-(?P<ts>[0-9]+)-[0-9a-f]{7}$', extract: '$ts', order: numerical}",
            &["main-100-aaaaaaa", "main-20-bbbbbbb", "dev-999-ccccccc"],
            Some("main-100-aaaaaaa"),
        ),
        (
            "{tags: '.*', exclude: ['^dbg-', 'rc'], order: alphabetical}",
            &["dbg-z", "y-rc", "x"],
            Some("x"),
        ),
        (
            "{tags: '.*', order: alphabetical}",
            &["bad\ntag", "a b", "ok"],
            Some("ok"),
        ),
    ];
    for (yaml, tags, want) in cases {
        let p = policy(yaml);
        let q = p.screen(tags.iter().copied());
        let got = p.select(&q, &BTreeMap::new(), now()).ok().map(|d| d.tag);
        assert_eq!(got.as_deref(), *want, "policy {yaml} over {tags:?}");
    }
}

#[test]
fn filter_is_independent_of_listing_order() {
    let p = policy("{tags: '.*', order: alphabetical}");
    assert_eq!(p.filter(["b", "a", "b"]), p.filter(["a", "b"]));
}

#[test]
fn no_candidate_says_what_was_listed_matched_and_left_out_for_each_reason() {
    let p = policy("{tags: '^v', exclude: ['-dbg$'], order: semver, range: '>=2'}");
    let listed = [
        "v1",
        "vnext",
        "v2.x",
        "v3-beta",
        "v1.0.0",
        "v1.5.0",
        "v1.9.0",
        "v0.1.0",
        "v2.0.0-dbg",
        "v2.1.0-dbg",
        "latest",
        "main",
    ];
    let q = p.screen(listed);
    assert_eq!((q.listed, q.matched), (12, 10));
    let e = p.select(&q, &BTreeMap::new(), now()).expect_err("none");
    assert_eq!(
        e.to_string(),
        "no tag qualifies: the registry listed 12 tags, 10 matched `^v`; \
         4 outside range >=2: v0.1.0, v1.0.0, v1.5.0…; \
         4 not semver: v1, v2.x, v3-beta…; \
         2 excluded by `-dbg$`: v2.0.0-dbg, v2.1.0-dbg"
    );

    let p = policy("{tags: '^[0-9a-f]{7}$', order: alphabetical}");
    let e = p
        .select(
            &p.screen(["latest", "main", "v1.2.3", "dev"]),
            &BTreeMap::new(),
            now(),
        )
        .expect_err("none");
    assert_eq!(
        e.to_string(),
        "no tag qualifies: the registry listed 4 tags, none matched `^[0-9a-f]{7}$` (dev, latest, main…)"
    );

    let mut q = p.screen(["aaaaaaa", "bbbbbbb"]);
    q.leave_out("aaaaaaa", "quarantined");
    q.leave_out("bbbbbbb", "quarantined");
    let e = p.select(&q, &BTreeMap::new(), now()).expect_err("none");
    assert!(
        e.to_string()
            .ends_with("2 matched `^[0-9a-f]{7}$`; 2 quarantined: aaaaaaa, bbbbbbb"),
        "{e}"
    );
    let e = p
        .select(&p.screen([]), &BTreeMap::new(), now())
        .expect_err("none");
    assert_eq!(
        e.to_string(),
        "no tag qualifies: the registry lists no tags"
    );
}

#[test]
fn min_age_keeps_a_tag_until_its_image_is_old_enough() {
    // now() is 2024-01-02T00:00:00Z.
    let facts = built(&[
        ("1.0.0", "2024-01-01T10:00:00Z"),
        ("1.1.0", "2024-01-01T23:00:00Z"),
        ("1.2.0", "2024-01-01T23:48:00Z"),
    ]);
    let p = policy("{tags: '.*', order: semver, minAge: 1h}");
    let d = p
        .select(&p.screen(["1.0.0", "1.1.0", "1.2.0"]), &facts, now())
        .expect("winner");
    assert_eq!(d.tag, "1.1.0");
    let held = d.held_back.expect("1.2.0 held back");
    assert_eq!(
        format!("{held}: keeping {}", d.tag),
        "newest qualifying tag 1.2.0 is 12m old, minAge 1h: keeping 1.1.0"
    );
    assert!(
        d.skipped
            .contains(&("1.2.0".to_owned(), "younger than minAge 1h".to_owned())),
        "{:?}",
        d.skipped
    );

    // Old enough: nothing held back; without a build time a tag cannot be judged.
    let p = policy("{tags: '.*', order: semver, minAge: 10m}");
    let d = p
        .select(&p.screen(["1.0.0", "1.2.0", "1.3.0"]), &facts, now())
        .expect("winner");
    assert_eq!((d.tag.as_str(), d.held_back), ("1.2.0", None));
    assert_eq!(
        d.skipped,
        [(
            "1.3.0".to_owned(),
            "with no build time (image config `created`), which minAge needs".to_owned()
        )]
    );

    // Everything too young: no candidate, and the message says why.
    let p = policy("{tags: '.*', order: built, minAge: 2d}");
    let e = p
        .select(&p.screen(["1.0.0", "1.1.0", "1.2.0"]), &facts, now())
        .expect_err("none");
    assert!(
        e.to_string()
            .ends_with("; 3 younger than minAge 2days: 1.0.0, 1.1.0, 1.2.0"),
        "{e}"
    );
    assert!(p.needs_build_time());
    assert!(policy("{tags: '.*', order: semver, minAge: 1s}").needs_build_time());
    assert!(!policy("{tags: '.*', order: semver}").needs_build_time());
}
