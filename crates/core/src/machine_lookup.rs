//! MDE's machine lookups written as OData function calls in a path segment:
//! `findbyip(ip='10.1.2.3',timestamp=2019-09-22T08:44:05Z)` and
//! `find(timestamp=2018-06-19T10:00:00Z,key='10.166.93.61')`, and the rules they share:
//! the machines seen with the address within 15 minutes either side of the time, which
//! must be within the last 30 days. Pure: parsing and the window, not the lookup.

use std::net::IpAddr;
use std::time::Duration;

use appfence_proto::Timestamp;

use crate::ids::truncate;
use crate::Error;

/// How far either side of the timestamp a device counts as seen.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How far back a timestamp may be.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which lookup a segment asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupKind {
    /// `findbyip(ip=...,timestamp=...)`: the machines (a collection).
    FindByIp,
    /// `find(timestamp=...,key=...)`: "device information by internal IP".
    FindByKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpLookup {
    pub kind: LookupKind,
    pub ip: IpAddr,
    pub at: Timestamp,
}

impl IpLookup {
    /// The window to search: `at` ± 15 minutes.
    pub fn window(&self) -> (Timestamp, Timestamp) {
        (self.at.minus(WINDOW), self.at.plus(WINDOW))
    }

    /// `InvalidInput` unless `at` is within the 30 days before `now`.
    pub fn check_age(&self, now: Timestamp) -> Result<(), Error> {
        if self.at < now.minus(MAX_AGE) || self.at > now {
            return Err(Error::InvalidInput(format!(
                "The timestamp {} must be within the last 30 days (from {} to {})",
                self.at,
                now.minus(MAX_AGE),
                now
            )));
        }
        Ok(())
    }
}

/// The lookup a machine-id path segment names, if it is one (`None`: an ordinary id).
pub fn parse(segment: &str) -> Option<Result<IpLookup, Error>> {
    let open = segment.find('(')?;
    let kind = match segment[..open].to_ascii_lowercase().as_str() {
        "findbyip" => LookupKind::FindByIp,
        "find" => LookupKind::FindByKey,
        _ => return None,
    };
    Some(parse_call(kind, &segment[..open], &segment[open + 1..]))
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

fn parse_call(kind: LookupKind, name: &str, rest: &str) -> Result<IpLookup, Error> {
    let usage = match kind {
        LookupKind::FindByIp => "findbyip(ip='10.1.2.3',timestamp=2024-01-31T08:44:05Z)",
        LookupKind::FindByKey => "find(timestamp=2024-01-31T08:44:05Z,key='10.1.2.3')",
    };
    let args = rest.strip_suffix(')').ok_or_else(|| {
        invalid(format!(
            "{name}(...) is missing its closing parenthesis; write {usage}"
        ))
    })?;
    let ip_name = match kind {
        LookupKind::FindByIp => "ip",
        LookupKind::FindByKey => "key",
    };
    let (mut ip, mut at) = (None, None);
    for arg in split_args(args)? {
        let (key, value) = arg.split_once('=').ok_or_else(|| {
            invalid(format!(
                "'{}' is not a parameter like name=value; write {usage}",
                truncate(arg.trim(), 80)
            ))
        })?;
        let key = key.trim();
        let value = value.trim();
        if key.eq_ignore_ascii_case(ip_name) {
            if ip.is_some() {
                return Err(invalid(format!("The parameter {ip_name} is given twice")));
            }
            ip = Some(parse_ip(ip_name, value, kind)?);
        } else if key.eq_ignore_ascii_case("timestamp") {
            if at.is_some() {
                return Err(invalid("The parameter timestamp is given twice".into()));
            }
            at = Some(parse_time(value)?);
        } else {
            return Err(invalid(format!(
                "Unknown parameter '{}'; write {usage}",
                truncate(key, 40)
            )));
        }
    }
    Ok(IpLookup {
        kind,
        ip: ip.ok_or_else(|| Error::MissingRequiredParameter(ip_name.into()))?,
        at: at.ok_or_else(|| Error::MissingRequiredParameter("timestamp".into()))?,
    })
}

/// Splits at commas outside single quotes; an unclosed quote is an error.
fn split_args(args: &str) -> Result<Vec<&str>, Error> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in args.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(invalid(
            "A quoted value is missing its closing quote (')".into(),
        ));
    }
    out.push(&args[start..]);
    Ok(out.into_iter().filter(|a| !a.trim().is_empty()).collect())
}

/// The address: quoted as MDE writes it (`ip='10.1.2.3'`); `find`'s key may also come
/// bare, as its documentation's template shows it.
fn parse_ip(name: &str, value: &str, kind: LookupKind) -> Result<IpAddr, Error> {
    let unquoted = match value.strip_prefix('\'') {
        Some(v) => v.strip_suffix('\'').ok_or_else(|| {
            invalid(format!(
                "The value of {name} is missing its closing quote (')"
            ))
        })?,
        None if kind == LookupKind::FindByKey => value,
        None => {
            return Err(invalid(format!(
                "The value of {name} must be quoted, e.g. {name}='10.1.2.3'"
            )))
        }
    };
    unquoted.parse().map_err(|_| {
        invalid(format!(
            "'{}' is not an IPv4 or IPv6 address",
            truncate(unquoted, 80)
        ))
    })
}

/// A UTC time such as `2019-09-22T08:44:05Z` or with fractional seconds; quotes are
/// tolerated.
fn parse_time(value: &str) -> Result<Timestamp, Error> {
    let bare = value.trim_matches('\'');
    Timestamp::parse(bare).ok_or_else(|| {
        invalid(format!(
            "'{}' is not a UTC time like 2024-01-31T08:44:05Z",
            truncate(bare, 80)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(segment: &str) -> IpLookup {
        parse(segment).expect("a lookup").expect("valid")
    }

    fn err(segment: &str) -> String {
        parse(segment).expect("a lookup").unwrap_err().to_string()
    }

    #[test]
    fn documented_calls_parse() {
        let l = ok("findbyip(ip='10.248.240.38',timestamp=2019-09-22T08:44:05Z)");
        assert_eq!(l.kind, LookupKind::FindByIp);
        assert_eq!(l.ip, "10.248.240.38".parse::<IpAddr>().unwrap());
        assert_eq!(l.at, Timestamp::parse("2019-09-22T08:44:05Z").unwrap());
        let l = ok("find(timestamp=2018-06-19T10:00:00Z,key='10.166.93.61')");
        assert_eq!(l.kind, LookupKind::FindByKey);
        assert_eq!(
            ok("find(timestamp=2018-06-19T10:00:00Z,key=10.166.93.61)").ip,
            l.ip
        );
        // IPv6, fractional seconds, other case and spacing.
        let l = ok("FindByIp( ip = 'fe80::1' , timestamp = 2024-01-31T08:44:05.1234567Z )");
        assert_eq!(l.ip, "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            l.at,
            Timestamp::parse("2024-01-31T08:44:05.1234567Z").unwrap()
        );
        // Not a lookup at all.
        assert!(parse("0a3250e0693a109f1affc9217be9459028aa8426").is_none());
        assert!(parse("srv-01.corp.example").is_none());
        assert!(parse("other(x=1)").is_none());
    }

    #[test]
    fn malformed_calls_name_the_problem() {
        assert!(
            err("findbyip(ip='10.1.2.3,timestamp=2019-09-22T08:44:05Z)").contains("closing quote")
        );
        assert!(
            err("findbyip(ip=10.1.2.3,timestamp=2019-09-22T08:44:05Z)").contains("must be quoted")
        );
        assert!(
            err("findbyip(ip='10.1.2.300',timestamp=2019-09-22T08:44:05Z)")
                .contains("'10.1.2.300' is not an IPv4")
        );
        assert!(err("findbyip(ip='10.1.2.3',timestamp=yesterday)")
            .contains("'yesterday' is not a UTC time"));
        assert!(err("findbyip(ip='10.1.2.3',timestamp=2019-09-22T08:44:05Z")
            .contains("closing parenthesis"));
        assert!(err("findbyip(ip='10.1.2.3',when=2019-09-22T08:44:05Z)")
            .contains("Unknown parameter 'when'"));
        assert!(
            err("findbyip(ip='10.1.2.3',ip='10.1.2.4',timestamp=2019-09-22T08:44:05Z)")
                .contains("twice")
        );
        assert_eq!(
            err("findbyip(timestamp=2019-09-22T08:44:05Z)"),
            "Parameter ip is missing"
        );
        assert_eq!(
            err("find(key='10.1.2.3')"),
            "Parameter timestamp is missing"
        );
        assert!(err("findbyip(ip)").contains("name=value"));
    }

    #[test]
    fn the_window_is_fifteen_minutes_each_side_within_thirty_days() {
        let now = Timestamp::parse("2026-12-07T12:00:00Z").unwrap();
        let l = |at: &str| ok(&format!("findbyip(ip='10.0.0.1',timestamp={at})"));
        let (from, to) = l("2026-12-07T11:00:00Z").window();
        assert_eq!(from, Timestamp::parse("2026-12-07T10:45:00Z").unwrap());
        assert_eq!(to, Timestamp::parse("2026-12-07T11:15:00Z").unwrap());
        assert!(l("2026-11-07T12:00:00Z").check_age(now).is_ok());
        let old = l("2026-11-07T11:59:59Z").check_age(now).unwrap_err();
        assert!(old.to_string().contains("within the last 30 days"), "{old}");
        assert!(
            l("2026-12-07T12:00:01Z").check_age(now).is_err(),
            "the future is not the past"
        );
    }
}
