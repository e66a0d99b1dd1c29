use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0)
        .single()
        .expect("time")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn pin(tag: &str) -> Pinned {
    Pinned {
        tag: tag.into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
    }
}

fn rollout() -> Rollout {
    Rollout::committed(
        "dev",
        "app",
        pin("0f1e2d3"),
        Some(pin("a1b2c3d")),
        "c0ffee",
        t0(),
    )
}

fn policy(soak: u64, approval: bool) -> EnvPolicy {
    EnvPolicy {
        release: Some(crate::config::ReleaseKind::HelmRelease),
        timeout: Duration::from_secs(600),
        smoke: Some(SmokePolicy {
            retries: 2,
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(120),
        }),
        downstream: Some(Gate {
            to: "prod".into(),
            soak: Duration::from_secs(soak),
            approval,
            by_pull_request: false,
        }),
        resync: Duration::from_secs(30),
    }
}

fn obs(release: Option<Release>, smoke: Option<Result<(), String>>, approved: bool) -> Observation {
    Observation {
        release,
        smoke,
        approved,
    }
}

fn with_phase(phase: Phase, since: i64) -> Rollout {
    Rollout {
        phase,
        since: at(since),
        ..rollout()
    }
}

/// (name, rollout, observation, policy, now, phase after, events)
type Case = (
    &'static str,
    Rollout,
    Observation,
    EnvPolicy,
    i64,
    Phase,
    Vec<Event>,
);

#[test]
fn transitions_table() {
    let pending = Some(Release::Pending("revision main@sha1:old".into()));
    let ready = Some(Release::Ready);
    let broke = Some(Release::Failed("Remediated: upgrade failed".into()));
    let ok = Some(Ok(()));
    let bad = Some(Err("status 503".to_owned()));
    // (name, rollout, observation, policy, now, phase after, events)
    let cases: Vec<Case> = vec![
        (
            "waits for the reconcile",
            rollout(),
            obs(pending.clone(), None, false),
            policy(60, false),
            10,
            Phase::Committed,
            vec![],
        ),
        (
            "times out",
            rollout(),
            obs(pending.clone(), None, false),
            policy(60, false),
            600,
            Phase::Failed,
            vec![Event::Failed(
                "not Ready 10m after the commit: revision main@sha1:old".into(),
            )],
        ),
        (
            "release failure fails",
            rollout(),
            obs(broke.clone(), None, false),
            policy(60, false),
            5,
            Phase::Failed,
            vec![Event::Failed("Remediated: upgrade failed".into())],
        ),
        (
            "ready then smoke is due",
            rollout(),
            obs(ready.clone(), None, false),
            policy(60, false),
            5,
            Phase::Ready,
            vec![Event::Ready("HelmRelease Ready".into())],
        ),
        (
            "smoke ok starts the soak",
            with_phase(Phase::Ready, 5),
            obs(ready.clone(), ok.clone(), false),
            policy(60, false),
            6,
            Phase::Soaking,
            vec![Event::SmokeOk, Event::Soaking(at(66))],
        ),
        (
            "smoke failure retried",
            with_phase(Phase::Ready, 5),
            obs(ready.clone(), bad.clone(), false),
            policy(60, false),
            6,
            Phase::Ready,
            vec![],
        ),
        (
            "smoke past retries fails",
            Rollout {
                smoke_failures: 2,
                ..with_phase(Phase::Ready, 5)
            },
            obs(ready.clone(), bad.clone(), false),
            policy(60, false),
            20,
            Phase::Failed,
            vec![Event::Failed(
                "smoke check failed 3 time(s): status 503".into(),
            )],
        ),
        (
            "smoke past deadline fails",
            with_phase(Phase::Ready, 0),
            obs(ready.clone(), bad.clone(), false),
            policy(60, false),
            121,
            Phase::Failed,
            vec![Event::Failed(
                "smoke check failed 1 time(s): status 503".into(),
            )],
        ),
        (
            "still soaking",
            with_phase(Phase::Soaking, 0),
            obs(ready.clone(), ok.clone(), false),
            policy(60, false),
            59,
            Phase::Soaking,
            vec![],
        ),
        (
            "unhealthy while soaking fails",
            with_phase(Phase::Soaking, 0),
            obs(broke.clone(), None, false),
            policy(60, false),
            30,
            Phase::Failed,
            vec![Event::Failed("Remediated: upgrade failed".into())],
        ),
        (
            "soak over, no approval needed",
            with_phase(Phase::Soaking, 0),
            obs(ready.clone(), ok.clone(), false),
            policy(60, false),
            60,
            Phase::Healthy,
            vec![Event::SoakDone, Event::Healthy],
        ),
        (
            "soak over, approval needed",
            with_phase(Phase::Soaking, 0),
            obs(ready.clone(), ok.clone(), false),
            policy(60, true),
            61,
            Phase::AwaitingApproval,
            vec![Event::SoakDone, Event::AwaitingApproval("prod".into())],
        ),
        (
            "soak over, already approved",
            with_phase(Phase::Soaking, 0),
            obs(ready.clone(), ok.clone(), true),
            policy(60, true),
            61,
            Phase::Healthy,
            vec![Event::SoakDone, Event::Healthy],
        ),
        (
            "approval arrives",
            with_phase(Phase::AwaitingApproval, 0),
            obs(ready.clone(), None, true),
            policy(60, true),
            900,
            Phase::Healthy,
            vec![Event::Approved, Event::Healthy],
        ),
        (
            "no approval yet",
            with_phase(Phase::AwaitingApproval, 0),
            obs(ready.clone(), None, false),
            policy(60, true),
            900,
            Phase::AwaitingApproval,
            vec![],
        ),
        (
            "terminal stays",
            with_phase(Phase::Quarantined, 0),
            obs(broke.clone(), None, false),
            policy(60, true),
            900,
            Phase::Quarantined,
            vec![],
        ),
    ];
    for (name, r, o, p, now, phase, events) in cases {
        let s = step(&r, &o, &p, at(now));
        assert_eq!(s.next.phase, phase, "{name}: {s:?}");
        assert_eq!(s.events, events, "{name}");
        if phase == r.phase && s.events.is_empty() && phase != Phase::Ready {
            assert_eq!(
                s.next.since, r.since,
                "{name}: staying keeps the phase's start"
            );
        }
    }
}

#[test]
fn a_leaf_env_goes_from_ready_to_healthy_in_one_step() {
    let p = EnvPolicy {
        smoke: None,
        downstream: None,
        ..policy(0, false)
    };
    let s = step(
        &rollout(),
        &obs(Some(Release::Ready), None, false),
        &p,
        at(3),
    );
    assert_eq!(s.next.phase, Phase::Healthy);
    assert_eq!(
        s.events,
        vec![Event::Ready("HelmRelease Ready".into()), Event::Healthy]
    );
    let no_release = EnvPolicy { release: None, ..p };
    assert_eq!(
        step(&rollout(), &Observation::default(), &no_release, at(0))
            .next
            .phase,
        Phase::Healthy
    );
}

#[test]
fn needs_follow_the_phase() {
    let p = policy(60, true);
    let n = |phase| needs(&with_phase(phase, 0), &p);
    assert_eq!(
        n(Phase::Committed),
        Needs {
            release: true,
            smoke: false
        }
    );
    assert_eq!(
        n(Phase::Ready),
        Needs {
            release: true,
            smoke: true
        }
    );
    assert_eq!(
        n(Phase::Soaking),
        Needs {
            release: true,
            smoke: true
        }
    );
    assert_eq!(
        n(Phase::Healthy),
        Needs {
            release: false,
            smoke: false
        }
    );
}

#[test]
fn promotion_needs_healthy_and_never_takes_a_quarantined_tag() {
    assert_eq!(
        promotion(&with_phase(Phase::Healthy, 0), false),
        Promotion::Go(pin("0f1e2d3"))
    );
    assert!(matches!(
        promotion(&with_phase(Phase::Healthy, 0), true),
        Promotion::Hold(_)
    ));
    assert!(matches!(
        promotion(&with_phase(Phase::Soaking, 0), false),
        Promotion::Hold(_)
    ));
    assert!(matches!(
        promotion(&with_phase(Phase::Promoted, 0), false),
        Promotion::Hold(_)
    ));
}

#[test]
fn last_good_is_what_a_revert_restores() {
    assert_eq!(
        last_good(&with_phase(Phase::Committed, 0)),
        Some(pin("a1b2c3d"))
    );
    assert_eq!(
        last_good(&with_phase(Phase::Promoted, 0)),
        Some(pin("0f1e2d3"))
    );
    assert_eq!(
        last_good(&with_phase(Phase::Quarantined, 0)),
        Some(pin("a1b2c3d"))
    );
}

#[test]
fn state_round_trips_through_json() {
    let r = with_phase(Phase::AwaitingApproval, 42);
    let text = serde_json::to_string(&r).expect("json");
    assert!(text.contains("\"phase\":\"awaitingApproval\""), "{text}");
    assert_eq!(serde_json::from_str::<Rollout>(&text).expect("parse"), r);
}

/// The soak timer with tokio's paused clock: the loop sleeps exactly as long as `step` says, and
/// the soak ends after 10 minutes of (virtual) time however the wake-ups fall.
#[tokio::test(start_paused = true)]
async fn soak_runs_on_the_clock_it_is_given() {
    let start = tokio::time::Instant::now();
    let now = || t0() + chrono::Duration::from_std(start.elapsed()).expect("duration");
    let p = policy(600, false);
    let mut r = with_phase(Phase::Ready, 0);
    let mut wakes = 0;
    loop {
        let s = step(
            &r,
            &obs(Some(Release::Ready), Some(Ok(())), false),
            &p,
            now(),
        );
        r = s.next;
        if r.phase == Phase::Healthy {
            break;
        }
        wakes += 1;
        assert!(wakes < 100, "the soak never ended: {r:?}");
        tokio::time::sleep(s.wake.expect("a soak always wakes")).await;
    }
    assert_eq!(start.elapsed(), Duration::from_secs(600));
    // One health check per resync (30 s) through the 10-minute soak.
    assert_eq!(wakes, 20);
}

/// A restart mid-soak resumes from the stored start: only the rest of the soak is waited.
#[tokio::test(start_paused = true)]
async fn a_restored_soak_only_waits_the_rest() {
    let start = tokio::time::Instant::now();
    let p = policy(600, false);
    // Stored by the previous leader: soaking since 8 minutes before "now".
    let restored = with_phase(Phase::Soaking, 0);
    let now = || at(480) + chrono::Duration::from_std(start.elapsed()).expect("duration");
    let mut r = restored;
    while r.phase == Phase::Soaking {
        let s = step(
            &r,
            &obs(Some(Release::Ready), Some(Ok(())), false),
            &p,
            now(),
        );
        r = s.next;
        if let Some(w) = s.wake.filter(|_| r.phase == Phase::Soaking) {
            tokio::time::sleep(w).await;
        }
    }
    assert_eq!(r.phase, Phase::Healthy);
    assert_eq!(start.elapsed(), Duration::from_secs(120));
}
