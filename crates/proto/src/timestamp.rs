//! UTC timestamps with MDE's precision: 100-nanosecond ticks, printed with up to seven
//! fractional digits and trailing zeros trimmed (`2021-01-26T20:33:59.2Z`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time, counted in 100 ns ticks since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const TICKS_PER_SECOND: i64 = 10_000_000;

impl Timestamp {
    pub const fn from_ticks(ticks: i64) -> Self {
        Timestamp(ticks)
    }

    pub const fn ticks(self) -> i64 {
        self.0
    }

    pub fn from_unix_seconds(seconds: i64) -> Self {
        Timestamp(seconds * TICKS_PER_SECOND)
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(TICKS_PER_SECOND)
    }

    pub fn from_offset_date_time(t: OffsetDateTime) -> Self {
        Timestamp((t.unix_timestamp_nanos() / 100) as i64)
    }

    pub fn to_offset_date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 100)
            .expect("ticks within the range of OffsetDateTime")
    }

    /// Adds a (possibly negative) duration.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add((d.as_nanos() / 100) as i64))
    }

    pub fn minus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_sub((d.as_nanos() / 100) as i64))
    }

    /// Parses any RFC 3339 timestamp (any offset, any number of fractional digits).
    /// Digits beyond the seventh are truncated.
    pub fn parse(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Self::from_offset_date_time(t))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_offset_date_time();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        let frac = self.0.rem_euclid(TICKS_PER_SECOND);
        if frac != 0 {
            let digits = format!("{frac:07}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {s}")))
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .examples([serde_json::json!("2024-10-21T11:27:58.1447302Z")])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_seven_digits_trimmed() {
        let t = Timestamp::parse("2024-10-21T11:27:58.1447302Z").unwrap();
        assert_eq!(t.to_string(), "2024-10-21T11:27:58.1447302Z");
        let t = Timestamp::parse("2021-01-26T20:33:59.2Z").unwrap();
        assert_eq!(t.to_string(), "2021-01-26T20:33:59.2Z");
        let t = Timestamp::parse("2024-10-21T11:25:48.330819Z").unwrap();
        assert_eq!(t.to_string(), "2024-10-21T11:25:48.330819Z");
        let t = Timestamp::parse("2024-10-21T11:25:48Z").unwrap();
        assert_eq!(t.to_string(), "2024-10-21T11:25:48Z");
    }

    #[test]
    fn accepts_offsets_and_truncates_extra_digits() {
        let a = Timestamp::parse("2024-10-21T13:25:48.123456789+02:00").unwrap();
        assert_eq!(a.to_string(), "2024-10-21T11:25:48.1234567Z");
        assert!(Timestamp::parse("2024-10-21").is_none());
        assert!(Timestamp::parse("yesterday").is_none());
    }

    #[test]
    fn round_trips_through_json() {
        let t = Timestamp::from_ticks(17_295_100_781_447_302);
        let j = serde_json::to_string(&t).unwrap();
        let back: Timestamp = serde_json::from_str(&j).unwrap();
        assert_eq!(back, t);
    }
}
