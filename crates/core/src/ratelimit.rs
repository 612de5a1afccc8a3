//! Rate-limit arithmetic (MDE: per caller and per API, 100 calls a minute and 1,500 an
//! hour). Fixed windows aligned to the minute and the hour, as MDE's message
//! "maximum allowed 100 per 00:01:00" describes; a call is admitted only if every
//! window still has room, and only admitted calls are counted.

use std::time::Duration;

use appfence_proto::Timestamp;

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitPolicy {
    pub per_minute: u32,
    pub per_hour: u32,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        RateLimitPolicy {
            per_minute: 100,
            per_hour: 1500,
        }
    }
}

/// One fixed window of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub name: &'static str,
    pub limit: u32,
    pub length: Duration,
}

impl RateLimitPolicy {
    pub fn windows(&self) -> [Window; 2] {
        [
            Window {
                name: "minute",
                limit: self.per_minute,
                length: Duration::from_secs(60),
            },
            Window {
                name: "hour",
                limit: self.per_hour,
                length: Duration::from_secs(3600),
            },
        ]
    }

    /// The `RateLimit-Policy` header (draft-ietf-httpapi-ratelimit-headers).
    pub fn header(&self) -> String {
        self.windows()
            .iter()
            .map(|w| format!("\"{}\";q={};w={}", w.name, w.limit, w.length.as_secs()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which window a moment falls in: its start, in ticks.
pub fn window_start(now: Timestamp, length: Duration) -> i64 {
    let len = (length.as_nanos() / 100) as i64;
    now.ticks().div_euclid(len) * len
}

/// Time left until the window containing `now` ends.
pub fn until_window_end(now: Timestamp, length: Duration) -> Duration {
    let len = (length.as_nanos() / 100) as i64;
    let end = window_start(now, length) + len;
    Duration::from_nanos(((end - now.ticks()) * 100) as u64)
}

/// The outcome of one call against the limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// The window that is tightest (least remaining; on refusal, the one that refused).
    pub window: Window,
    pub remaining: u32,
    /// Until the tightest window resets.
    pub reset: Duration,
}

/// Decides a call given the counts already admitted in the current windows
/// (`counts[i]` for `policy.windows()[i]`).
pub fn decide(policy: &RateLimitPolicy, counts: [u32; 2], now: Timestamp) -> Decision {
    let windows = policy.windows();
    // A refusing window, if any: the one whose reset is furthest away decides.
    let refusing = windows
        .iter()
        .zip(counts)
        .filter(|(w, c)| *c >= w.limit)
        .max_by_key(|(w, _)| until_window_end(now, w.length));
    if let Some((w, _)) = refusing {
        return Decision {
            admitted: false,
            window: *w,
            remaining: 0,
            reset: until_window_end(now, w.length),
        };
    }
    let (w, c) = windows
        .iter()
        .zip(counts)
        .min_by_key(|(w, c)| w.limit - c)
        .expect("two windows");
    Decision {
        admitted: true,
        window: *w,
        remaining: w.limit - c - 1,
        reset: until_window_end(now, w.length),
    }
}

impl Decision {
    /// The `RateLimit` header (draft-ietf-httpapi-ratelimit-headers).
    pub fn header(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.window.name,
            self.remaining,
            ceil_secs(self.reset)
        )
    }

    /// `TooManyRequests` with MDE's message, when refused.
    pub fn into_result(self) -> Result<Decision, Error> {
        if self.admitted {
            return Ok(self);
        }
        let secs = self.window.length.as_secs();
        Err(Error::TooManyRequests {
            message: format!(
                "API calls quota exceeded! maximum allowed {} per {:02}:{:02}:{:02}",
                self.window.limit,
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            ),
            retry_after: self.reset,
        })
    }
}

/// Whole seconds, rounded up: `Retry-After` must not invite a call that is still refused.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_seconds(secs)
    }

    #[test]
    fn admits_until_a_window_is_full() {
        let p = RateLimitPolicy::default();
        let d = decide(&p, [0, 0], at(3600 + 15));
        assert!(d.admitted);
        assert_eq!((d.window.name, d.remaining), ("minute", 99));
        assert_eq!(d.reset, Duration::from_secs(45));
        let d = decide(&p, [99, 99], at(3600));
        assert!(d.admitted && d.remaining == 0);
        let d = decide(&p, [100, 100], at(3600 + 15));
        assert!(!d.admitted);
        assert_eq!(d.reset, Duration::from_secs(45));
        let err = d.into_result().unwrap_err();
        assert_eq!(
            err,
            Error::TooManyRequests {
                message: "API calls quota exceeded! maximum allowed 100 per 00:01:00".into(),
                retry_after: Duration::from_secs(45)
            }
        );
    }

    #[test]
    fn the_hour_window_refuses_with_its_own_reset() {
        let p = RateLimitPolicy::default();
        let d = decide(&p, [3, 1500], at(7200 + 600));
        assert!(!d.admitted);
        assert_eq!(d.window.name, "hour");
        assert_eq!(d.reset, Duration::from_secs(3000));
        assert!(
            matches!(d.into_result(), Err(Error::TooManyRequests { message, .. }) if message.ends_with("1500 per 01:00:00"))
        );
    }

    #[test]
    fn windows_align_and_headers_follow_the_draft() {
        let p = RateLimitPolicy {
            per_minute: 10,
            per_hour: 50,
        };
        assert_eq!(p.header(), "\"minute\";q=10;w=60, \"hour\";q=50;w=3600");
        assert_eq!(
            window_start(at(125), Duration::from_secs(60)),
            at(120).ticks()
        );
        let d = decide(&p, [2, 45], at(130));
        assert_eq!(d.window.name, "hour");
        assert_eq!(d.header(), "\"hour\";r=4;t=3470");
        let sub = Timestamp::from_ticks(at(130).ticks() + 1);
        assert_eq!(
            ceil_secs(until_window_end(sub, Duration::from_secs(60))),
            50
        );
    }
}
