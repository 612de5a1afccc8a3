//! What both engines' address histories share: the canonical form of an address and
//! when a report extends a stretch of time or starts a new one.

use std::net::IpAddr;

use appfence_proto::Timestamp;

/// A report more than this long after the last one starts a new stretch.
const MAX_GAP_SECONDS: i64 = 15 * 60;
/// A stretch is extended at most this often (heartbeats come every 30 s; the lookups
/// work in 15-minute windows, so a minute's precision costs nothing and saves writes).
const EXTEND_EVERY_SECONDS: i64 = 60;
const TICKS_PER_SECOND: i64 = 10_000_000;

/// The canonical text of an address the agent reported; `None` if it is not one.
pub(crate) fn canonical(ip: &str) -> Option<String> {
    let ip: IpAddr = ip.trim().parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    })
}

/// What a report at `at` does to the stretch that last ended at `last` (in ticks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stretch {
    /// Reported less than a minute ago: nothing to write.
    Keep,
    /// Extend the stretch that ended at this tick.
    Extend(i64),
    /// A new stretch.
    Start,
}

pub(crate) fn stretch(last: Option<i64>, at: Timestamp) -> Stretch {
    let now = at.ticks();
    match last {
        Some(last) if now >= last && now - last < EXTEND_EVERY_SECONDS * TICKS_PER_SECOND => {
            Stretch::Keep
        }
        Some(last) if now >= last && now - last <= MAX_GAP_SECONDS * TICKS_PER_SECOND => {
            Stretch::Extend(last)
        }
        _ => Stretch::Start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_extend_within_the_gap_and_start_after_it() {
        let t = |s: i64| Timestamp::from_unix_seconds(1_700_000_000 + s);
        let last = Some(t(0).ticks());
        assert_eq!(stretch(None, t(0)), Stretch::Start);
        assert_eq!(stretch(last, t(30)), Stretch::Keep);
        assert_eq!(stretch(last, t(60)), Stretch::Extend(t(0).ticks()));
        assert_eq!(stretch(last, t(900)), Stretch::Extend(t(0).ticks()));
        assert_eq!(stretch(last, t(901)), Stretch::Start);
        assert_eq!(
            stretch(last, t(-5)),
            Stretch::Start,
            "a clock that went back"
        );
        assert_eq!(canonical("2001:DB8:0::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(canonical("::ffff:10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(canonical(" 10.0.0.1 ").as_deref(), Some("10.0.0.1"));
        assert_eq!(canonical("host"), None);
    }
}
