use chrono::{TimeZone, Utc};

use std::collections::BTreeMap;

use super::*;
use crate::rewrite::{Change, Field};

const CONFIG: &str = "images:\n  app: {repository: r.example.com/team/app, policy: {tags: '.*', order: built}}\nenvironments:\n  dev: {file: envs/dev/patch.yaml, release: {namespace: dev, name: app}}\n  prod: {file: envs/prod/patch.yaml, promoteFrom: dev, gate: {soak: 10m, approval: true}}\n";

fn cfg() -> Config {
    config::parse("c", CONFIG).expect("config")
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0)
        .single()
        .expect("time")
}

fn oid(n: u8) -> Oid {
    Oid::from_bytes(&[n; 20]).expect("oid")
}

fn desired(env: &str, tag: &str) -> PerEnv {
    let d = Desired {
        image: "app".into(),
        repository: "r.example.com/team/app".into(),
        tag: tag.into(),
        digest: format!("sha256:{}", tag.repeat(10)),
        reason: String::new(),
    };
    PerEnv::from([(env.to_owned(), BTreeMap::from([("app".to_owned(), d)]))])
}

fn change(env: &str, old: &str, new: &str) -> EnvChange {
    EnvChange {
        env: env.into(),
        change: Change {
            file: format!("envs/{env}/patch.yaml"),
            image: "app".into(),
            field: Field::Tag,
            line: 3,
            old: old.into(),
            new: new.into(),
        },
    }
}

#[test]
fn first_sight_is_a_silent_healthy_baseline() {
    let mut state = State::default();
    let reg = register(
        &cfg(),
        &mut state,
        &desired("dev", "a1b2c3d"),
        &Seen {
            changes: &[],
            commit: None,
            head: oid(1),
            from_git: &FromGit::new(),
        },
        now(),
    );
    assert_eq!(reg, Registered::default());
    let r = state.get("dev", "app").expect("baseline");
    assert_eq!(
        (r.pinned.tag.as_str(), r.phase),
        ("a1b2c3d", Phase::Healthy)
    );
}

#[test]
fn a_commit_starts_a_rollout_remembering_what_to_revert_to() {
    let mut state = State::default();
    let changes = [change("dev", "a1b2c3d", "0f1e2d3")];
    let reg = register(
        &cfg(),
        &mut state,
        &desired("dev", "0f1e2d3"),
        &Seen {
            changes: &changes,
            commit: Some(oid(2)),
            head: oid(2),
            from_git: &FromGit::new(),
        },
        now(),
    );
    assert_eq!(reg.started, vec![("dev".to_owned(), "app".to_owned())]);
    let r = state.get("dev", "app").expect("rollout");
    assert_eq!(
        (r.phase, r.commit.clone()),
        (Phase::Committed, oid(2).to_string())
    );
    assert_eq!(r.previous.as_ref().map(|p| p.tag.as_str()), Some("a1b2c3d"));
    // The next cycle sees the same values: nothing new.
    let again = register(
        &cfg(),
        &mut state,
        &desired("dev", "0f1e2d3"),
        &Seen {
            changes: &[],
            commit: None,
            head: oid(3),
            from_git: &FromGit::new(),
        },
        now(),
    );
    assert_eq!(again, Registered::default());
}

#[test]
fn a_newer_tag_supersedes_an_unfinished_rollout() {
    let mut state = State::default();
    let changes = [change("dev", "a1b2c3d", "0f1e2d3")];
    register(
        &cfg(),
        &mut state,
        &desired("dev", "0f1e2d3"),
        &Seen {
            changes: &changes,
            commit: Some(oid(2)),
            head: oid(2),
            from_git: &FromGit::new(),
        },
        now(),
    );
    let changes = [change("dev", "0f1e2d3", "1a2b3c4")];
    let reg = register(
        &cfg(),
        &mut state,
        &desired("dev", "1a2b3c4"),
        &Seen {
            changes: &changes,
            commit: Some(oid(3)),
            head: oid(3),
            from_git: &FromGit::new(),
        },
        now(),
    );
    assert_eq!(reg.superseded.len(), 1);
    assert_eq!(reg.superseded[0].phase, Phase::Superseded);
    let r = state.get("dev", "app").expect("rollout");
    assert_eq!(r.pinned.tag, "1a2b3c4");
    assert_eq!(
        r.previous.as_ref().map(|p| p.tag.as_str()),
        Some("a1b2c3d"),
        "the last good, not the unfinished one"
    );
}

#[test]
fn promotion_waits_for_healthy_and_a_commit_made_by_a_lost_leader_is_adopted_not_repeated() {
    let c = cfg();
    let mut state = State::default();
    let changes = [change("dev", "a1b2c3d", "0f1e2d3")];
    register(
        &c,
        &mut state,
        &desired("dev", "0f1e2d3"),
        &Seen {
            changes: &changes,
            commit: Some(oid(2)),
            head: oid(2),
            from_git: &FromGit::new(),
        },
        now(),
    );
    assert!(
        promotions(&c, &state, &config::Gates::default()).is_empty(),
        "dev is not healthy yet"
    );
    state.rollouts.get_mut("dev/app").expect("dev").phase = Phase::Healthy;
    let due = promotions(&c, &state, &config::Gates::default());
    assert_eq!(due["prod"]["app"].tag, "0f1e2d3");
    assert_eq!(
        due["prod"]["app"].digest,
        format!("sha256:{}", "0f1e2d3".repeat(10)),
        "the exact digest dev ran"
    );
    let quarantined = config::Gates {
        quarantine: vec![config::QuarantineEntry {
            image: "app".into(),
            tag: "0f1e2d3".into(),
            reason: String::new(),
            at: String::new(),
        }],
        ..config::Gates::default()
    };
    assert!(
        promotions(&c, &state, &quarantined).is_empty(),
        "a quarantined tag is never promoted"
    );
    // The old leader pushed the promotion and died before saving: git already has it, so the
    // plan is unchanged and the rollout is adopted at the head.
    let reg = register(
        &c,
        &mut state,
        &due,
        &Seen {
            changes: &[],
            commit: None,
            head: oid(9),
            from_git: &FromGit::new(),
        },
        now(),
    );
    assert_eq!(reg.started, vec![("prod".to_owned(), "app".to_owned())]);
    assert_eq!(
        state.get("prod", "app").expect("prod").commit,
        oid(9).to_string()
    );
    assert_eq!(state.get("dev", "app").expect("dev").phase, Phase::Promoted);
    assert!(
        promotions(&c, &state, &config::Gates::default()).is_empty(),
        "promoted once"
    );
}

#[test]
fn after_a_revert_the_restored_values_are_not_a_new_rollout() {
    let mut state = State::default();
    let changes = [change("dev", "a1b2c3d", "0f1e2d3")];
    register(
        &cfg(),
        &mut state,
        &desired("dev", "0f1e2d3"),
        &Seen {
            changes: &changes,
            commit: Some(oid(2)),
            head: oid(2),
            from_git: &FromGit::new(),
        },
        now(),
    );
    let r = state.rollouts.get_mut("dev/app").expect("dev");
    r.previous = Some(Pinned {
        tag: "a1b2c3d".into(),
        digest: format!("sha256:{}", "a1b2c3d".repeat(10)),
    });
    r.phase = Phase::Quarantined;
    let reg = register(
        &cfg(),
        &mut state,
        &desired("dev", "a1b2c3d"),
        &Seen {
            changes: &[],
            commit: None,
            head: oid(4),
            from_git: &FromGit::new(),
        },
        now(),
    );
    assert_eq!(reg, Registered::default());
    assert_eq!(
        state.get("dev", "app").expect("dev").phase,
        Phase::Quarantined
    );
}

#[test]
fn env_policy_takes_the_gate_of_the_environment_promoted_from_it() {
    let p = env_policy(&cfg(), "dev").expect("dev");
    let g = p.downstream.expect("prod promotes from dev");
    assert_eq!(
        (g.to.as_str(), g.soak.as_secs(), g.approval),
        ("prod", 600, true)
    );
    assert_eq!(p.release, Some(crate::config::ReleaseKind::HelmRelease));
    assert!(
        env_policy(&cfg(), "prod")
            .expect("prod")
            .downstream
            .is_none()
    );
    assert!(wants_rollouts(&cfg()));
}

fn pin(tag: &str) -> Pinned {
    Pinned {
        tag: tag.into(),
        digest: format!("sha256:{}", tag.repeat(10)),
    }
}

#[test]
fn a_commit_found_in_git_without_state_is_followed_from_that_commit() {
    // A replica pushed 0f1e2d3 to dev and died before saving any state.
    let mut state = State::default();
    let from_git = FromGit::from([(
        State::key("dev", "app"),
        Adopted {
            commit: oid(4),
            set: pin("0f1e2d3"),
            previous: Some(pin("a1b2c3d")),
        },
    )]);
    let reg = register(
        &cfg(),
        &mut state,
        &desired("dev", "0f1e2d3"),
        &Seen {
            changes: &[],
            commit: None,
            head: oid(5),
            from_git: &from_git,
        },
        now(),
    );
    assert_eq!(reg.started, vec![("dev".to_owned(), "app".to_owned())]);
    let r = state.get("dev", "app").expect("rollout");
    assert_eq!(
        (r.phase, r.commit.clone()),
        (Phase::Committed, oid(4).to_string()),
        "followed from the commit that made it, not taken as running"
    );
    assert_eq!(
        r.previous,
        Some(pin("a1b2c3d")),
        "revertible from git alone"
    );
}

#[test]
fn values_edited_by_hand_after_tagflow_commit_are_a_baseline() {
    let mut state = State::default();
    let from_git = FromGit::from([(
        State::key("dev", "app"),
        Adopted {
            commit: oid(4),
            set: pin("0f1e2d3"),
            previous: Some(pin("a1b2c3d")),
        },
    )]);
    let reg = register(
        &cfg(),
        &mut state,
        &desired("dev", "9e8d7c6"),
        &Seen {
            changes: &[],
            commit: None,
            head: oid(5),
            from_git: &from_git,
        },
        now(),
    );
    assert_eq!(reg, Registered::default());
    assert_eq!(
        state.get("dev", "app").map(|r| r.phase),
        Some(Phase::Healthy)
    );
}

#[test]
fn unknown_lists_only_pairs_without_state() {
    let mut state = State::default();
    register(
        &cfg(),
        &mut state,
        &desired("dev", "a1b2c3d"),
        &Seen {
            changes: &[],
            commit: None,
            head: oid(1),
            from_git: &FromGit::new(),
        },
        now(),
    );
    let mut both = desired("dev", "a1b2c3d");
    both.extend(desired("prod", "a1b2c3d"));
    assert_eq!(
        unknown(&state, &both),
        vec![("prod".to_owned(), "app".to_owned())]
    );
}
