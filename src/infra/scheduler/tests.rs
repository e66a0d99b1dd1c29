use std::sync::{Arc, Mutex};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn every_second() -> Vec<(String, cron::Schedule)> {
    vec![("aws".into(), cron::Schedule::parse("* * * * * *").unwrap())]
}

/// Log lines written while `f` runs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn it_sleeps_until_the_next_fire_time_not_the_rescan_period() {
    let mut a = Anchors::new(t("2024-01-01T00:00:00.400Z"));
    let (fires, wait) = a.step(&every_second(), t("2024-01-01T00:00:00.400Z"));
    assert!(fires.is_empty());
    assert_eq!(wait, Duration::from_millis(600));
    let (fires, wait) = a.step(&every_second(), t("2024-01-01T00:00:01.002Z"));
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0].at, t("2024-01-01T00:00:01Z"));
    assert_eq!(fires[0].missed, 0, "on time: nothing folds");
    assert_eq!(wait, Duration::from_millis(998));
}

#[test]
fn only_a_real_pause_folds_fire_times() {
    let mut a = Anchors::new(t("2024-01-01T00:00:00.500Z"));
    let (fires, _) = a.step(&every_second(), t("2024-01-01T00:00:01.010Z"));
    assert_eq!(fires[0].missed, 0);
    // Held up for five seconds: 02..06 passed, one run serves 06 and says four folded.
    let (fires, wait) = a.step(&every_second(), t("2024-01-01T00:00:06.300Z"));
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0].at, t("2024-01-01T00:00:06Z"));
    assert_eq!(fires[0].missed, 4);
    assert_eq!(fires[0].late, Duration::from_millis(4300));
    assert_eq!(wait, Duration::from_millis(700));
}

#[test]
fn the_wait_never_exceeds_the_rescan_period_nor_spins() {
    let hourly = vec![("a".into(), cron::Schedule::parse("0 0 * * * *").unwrap())];
    let mut a = Anchors::new(t("2024-01-01T00:10:00Z"));
    assert_eq!(a.step(&hourly, t("2024-01-01T00:10:00Z")).1, RESCAN);
    assert_eq!(a.step(&[], t("2024-01-01T00:10:00Z")).1, RESCAN);
    let mut a = Anchors::new(t("2024-01-01T00:59:59.999Z"));
    assert_eq!(a.step(&hourly, t("2024-01-01T00:59:59.999Z")).1, MIN_WAIT);
}

/// The loop itself on tokio's paused clock: a per-second schedule whose runs take 300 ms runs
/// at every second, and never says fire times were missed.
#[tokio::test(start_paused = true)]
async fn a_per_second_schedule_runs_every_second_without_folding() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let clock = Clock::Tokio {
        utc0: t("2024-01-01T00:00:00.500Z"),
        t0: Instant::now(),
    };
    // Each fire and when (on the paused clock) it started.
    type Started = Vec<(Fire, DateTime<Utc>)>;
    let seen: Arc<Mutex<Started>> = Arc::default();
    let record = seen.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(drive(
        clock,
        every_second,
        move |fire: &Fire| {
            record.lock().unwrap().push((fire.clone(), clock.now()));
            Some(tokio::time::sleep(Duration::from_millis(300)))
        },
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    task.await.unwrap();

    let seen = seen.lock().unwrap();
    let at: Vec<String> = seen
        .iter()
        .map(|(f, _)| f.at.format("%S").to_string())
        .collect();
    assert_eq!(
        at,
        ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10"],
        "one run at each second"
    );
    for (fire, started) in seen.iter() {
        assert_eq!(fire.missed, 0, "{fire:?}");
        assert!(
            *started - fire.at < chrono::Duration::milliseconds(100),
            "started on time: {fire:?} at {started}"
        );
    }
    let text = logs.text();
    assert!(!text.contains("missed fire times"), "{text}");
}
