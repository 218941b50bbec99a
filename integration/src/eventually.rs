//! Bounded polling: wait for a condition instead of sleeping a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(75);

/// Patience when `WEFT_TEST_PATIENCE_SECS` is not set.
const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

/// How long [`eventually`] waits: `WEFT_TEST_PATIENCE_SECS` (seconds, fractions allowed),
/// 30 s by default. Raise it on slow CI machines instead of editing tests.
pub fn patience() -> Duration {
    std::env::var("WEFT_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_PATIENCE)
}

/// What one look of [`eventually`] saw: done with a value, or not yet (with what it saw).
pub trait Probe {
    /// The value handed back once the condition holds.
    type Output;
    /// `Ok(value)` when the condition holds; `Err(observation)` to keep waiting.
    fn outcome(self) -> Result<Self::Output, String>;
}

impl Probe for bool {
    type Output = ();
    fn outcome(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".to_owned()) }
    }
}

impl<T> Probe for Option<T> {
    type Output = T;
    fn outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

/// `Ok(Some(t))` is done; `Ok(None)` and `Err(e)` are not yet, and `e` is reported
/// as the last observation if patience runs out.
impl<T> Probe for anyhow::Result<Option<T>> {
    type Output = T;
    fn outcome(self) -> Result<T, String> {
        match self {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err("Ok(None)".to_owned()),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

/// `Ok(true)` is done; `Ok(false)` and `Err(e)` are not yet.
impl Probe for anyhow::Result<bool> {
    type Output = ();
    fn outcome(self) -> Result<(), String> {
        match self {
            Ok(true) => Ok(()),
            Ok(false) => Err("Ok(false)".to_owned()),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

/// Calls `probe` every 75 ms until it reports done (`true`, `Some(t)`, `Ok(Some(t))`,
/// `Ok(true)`), for at most [`patience()`]. A probe that hangs is cut off at the deadline.
///
/// Fails with `what`, the time waited and the last observation, so a timed-out test
/// says what it was waiting for and what it saw instead. Returning `Err(anyhow!(..))`
/// from the probe is the way to explain a "not yet":
///
/// ```no_run
/// # async fn demo(backend: weft_integration::Backend) -> anyhow::Result<()> {
/// weft_integration::eventually("v2 receives traffic", || async {
///     let n = backend.requests();
///     anyhow::ensure!(n > 0, "v2 has served {n} requests");
///     anyhow::Ok(Some(n))
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn eventually<F, Fut, P>(what: &str, probe: F) -> anyhow::Result<P::Output>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
    P: Probe,
{
    eventually_within(patience(), what, probe).await
}

/// [`eventually`] with an explicit patience, for waits that must be shorter or longer
/// than the usual one (e.g. proving something does *not* happen quickly).
pub async fn eventually_within<F, Fut, P>(
    patience: Duration,
    what: &str,
    mut probe: F,
) -> anyhow::Result<P::Output>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
    P: Probe,
{
    let start = Instant::now();
    let deadline = start + patience;
    let mut last = "never looked".to_owned();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, probe()).await {
            Ok(p) => match p.outcome() {
                Ok(t) => return Ok(t),
                Err(observation) => last = observation,
            },
            Err(_) => last = format!("the probe itself did not finish ({last})"),
        }
        if Instant::now() + POLL_INTERVAL > deadline {
            anyhow::bail!(
                "gave up after {:.1?} ({attempts} looks, patience {:?}) \
                 waiting for: {what}\n  last observation: {last}",
                start.elapsed(),
                patience,
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
