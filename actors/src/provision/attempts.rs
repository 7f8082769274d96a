//! The limit on failed link-code redemptions: a sender (channel and identity) whose
//! redemptions failed `link_max_failed_attempts` times within `link_attempt_window` has its
//! further redemptions refused, a valid code included, until its oldest failure in the
//! window is older than the window.
//!
//! Codes are about 50 bits, so guessing is impractical anyway; the limit makes a guessing
//! sender visible and stops it early. The check and the record happen in the sender's lane,
//! where its events are provisioned one at a time, so they need no further coordination.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::LaneKey;
use crate::settings::WebhookSettings;

/// Senders whose failures are kept at most; beyond it the one whose newest failure is the
/// oldest is forgotten first.
const TRACKED_MAX: usize = 100_000;

/// Failed redemptions per sender within the window.
#[derive(Debug)]
pub(super) struct LinkAttempts {
    max_failed: u32,
    window: Duration,
    failures: Mutex<HashMap<LaneKey, VecDeque<Instant>>>,
}

impl LinkAttempts {
    pub(super) fn new(settings: &WebhookSettings) -> LinkAttempts {
        LinkAttempts {
            max_failed: settings.link_max_failed_attempts,
            window: settings.link_attempt_window,
            failures: Mutex::default(),
        }
    }

    /// Returns the sender's failures within the window when they reach the limit (its next
    /// redemption is refused), else `None`.
    pub(super) fn limited(&self, sender: &LaneKey, now: Instant) -> Option<usize> {
        if self.max_failed == 0 {
            return None;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let times = failures.get_mut(sender)?;
        self.expire(times, now);
        let count = times.len();
        if count == 0 {
            failures.remove(sender);
            return None;
        }
        (count >= self.max_failed as usize).then_some(count)
    }

    /// Records a failed redemption of the sender.
    pub(super) fn record_failure(&self, sender: &LaneKey, now: Instant) {
        if self.max_failed == 0 {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= TRACKED_MAX && !failures.contains_key(sender) {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|last| now.saturating_duration_since(*last) < self.window)
            });
            if failures.len() >= TRACKED_MAX
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(k, _)| k.clone())
            {
                failures.remove(&oldest);
            }
        }
        let times = failures.entry(sender.clone()).or_default();
        self.expire(times, now);
        times.push_back(now);
        // Only the newest `max_failed` failures decide the limit.
        while times.len() > self.max_failed as usize {
            times.pop_front();
        }
    }

    /// Forgets senders with no failure within the window.
    pub(super) fn prune(&self, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, times| {
            self.expire(times, now);
            !times.is_empty()
        });
    }

    fn expire(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts(max_failed: u32) -> LinkAttempts {
        LinkAttempts::new(&WebhookSettings {
            link_max_failed_attempts: max_failed,
            link_attempt_window: Duration::from_secs(600),
            ..WebhookSettings::default()
        })
    }

    #[test]
    fn a_sender_is_limited_after_its_failures_until_the_window_passes() {
        let limit = attempts(3);
        let sender: LaneKey = (1, "on_guess".into());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limit.limited(&sender, t0), None, "attempt {i} is allowed");
            limit.record_failure(&sender, t0 + Duration::from_secs(i * 60));
        }
        let t = t0 + Duration::from_secs(180);
        assert_eq!(limit.limited(&sender, t), Some(3));
        assert_eq!(
            limit.limited(&(1, "on_other".into()), t),
            None,
            "per sender"
        );
        assert_eq!(
            limit.limited(&(2, "on_guess".into()), t),
            None,
            "per channel"
        );
        // The first failure leaves the window: one attempt more, then limited again.
        let later = t0 + Duration::from_secs(600);
        assert_eq!(limit.limited(&sender, later), None);
        limit.record_failure(&sender, later);
        assert_eq!(limit.limited(&sender, later), Some(3));
        // Long after, nothing is kept for the sender.
        limit.prune(later + Duration::from_secs(600));
        assert!(limit.failures.lock().unwrap().is_empty());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = attempts(0);
        let sender: LaneKey = (1, "on_guess".into());
        let now = Instant::now();
        for _ in 0..100 {
            limit.record_failure(&sender, now);
        }
        assert_eq!(limit.limited(&sender, now), None);
    }
}
