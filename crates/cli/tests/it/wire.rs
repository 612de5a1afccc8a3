//! Wire-level helpers: a read response, the error envelope check, MDE's timestamp
//! format, and the top-level key order of a JSON text.

use reqwest::header::HeaderMap;
use serde_json::Value;

pub const ODATA_CONTENT_TYPE: &str =
    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";

/// A response read to the end.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

/// The parts of an error envelope.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    pub target: String,
}

impl Resp {
    pub async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        Resp {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), HTTP {}: {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts MDE's OData response headers.
    pub fn assert_odata_headers(&self) {
        assert_eq!(
            self.header("content-type"),
            Some(ODATA_CONTENT_TYPE),
            "{self:?}"
        );
        assert_eq!(self.header("odata-version"), Some("4.0"), "{self:?}");
    }

    /// Asserts the status and the exact error envelope (compact JSON, exactly the keys
    /// `error.code/message/target`, target a GUID) with this code.
    pub fn assert_error(&self, status: u16, code: &str) -> ErrorInfo {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got: {}",
            self.text
        );
        let v = self.json();
        let err = v["error"]
            .as_object()
            .unwrap_or_else(|| panic!("no envelope: {}", self.text));
        assert_eq!(
            v.as_object().unwrap().len(),
            1,
            "only `error` at the top: {}",
            self.text
        );
        let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "message", "target"], "{}", self.text);
        assert_eq!(err["code"], code, "{}", self.text);
        let target = err["target"].as_str().expect("target is a string");
        assert!(is_guid(target), "target {target:?} is not a GUID");
        let info = ErrorInfo {
            code: code.into(),
            message: err["message"].as_str().expect("message is a string").into(),
            target: target.into(),
        };
        // Compact: serialising the parsed value again gives the same text.
        let compact = format!(
            r#"{{"error":{{"code":{},"message":{},"target":{}}}}}"#,
            Value::from(info.code.clone()),
            Value::from(info.message.clone()),
            Value::from(info.target.clone())
        );
        assert_eq!(self.text, compact, "the envelope is compact and in order");
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "error content type: {:?}",
            self.header("content-type")
        );
        info
    }
}

pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

pub fn is_machine_id(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?Z$`, without a regex engine.
pub fn is_mde_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || b[10] != b'T'
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
        || b[b.len() - 1] != b'Z'
    {
        return false;
    }
    let rest = &b[19..b.len() - 1];
    match rest {
        [] => true,
        [b'.', frac @ ..] => (1..=7).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The keys of the top-level JSON object of `text`, in the order written. A tiny scanner
/// (serde_json's `preserve_order` would change map order for the whole workspace): a
/// string at depth 1 followed by `:` is a key.
pub fn top_level_keys(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if i < chars.len() {
                        s.push(chars[i]);
                    }
                    i += 1;
                }
                let mut j = i + 1;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if depth == 1 && chars.get(j) == Some(&':') {
                    keys.push(s);
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// The JSON type name of a value, for the golden comparison.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Asserts the wire shape of a MachineAction: timestamps, id form, context.
pub fn assert_machine_action(v: &Value, public_url: &str, single: bool) {
    if single {
        assert_eq!(
            v["@odata.context"],
            format!("{public_url}/api/$metadata#MachineActions/$entity"),
            "{v}"
        );
    }
    assert!(is_guid(v["id"].as_str().unwrap_or("")), "id: {v}");
    for key in ["creationDateTimeUtc", "lastUpdateDateTimeUtc"] {
        let t = v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(is_mde_timestamp(t), "{key} = {t:?}");
    }
    if let Some(t) = v["cancellationDateTimeUtc"].as_str() {
        assert!(is_mde_timestamp(t), "cancellationDateTimeUtc = {t:?}");
    }
    assert!(v["errorHResult"].is_i64(), "errorHResult: {v}");
    assert!(v["commands"].is_array(), "commands: {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_mde() {
        for ok in [
            "2021-01-26T20:33:59.2Z",
            "2024-10-21T11:25:48.330819Z",
            "2024-10-21T11:27:58.1447302Z",
            "2024-10-21T11:27:58Z",
        ] {
            assert!(is_mde_timestamp(ok), "{ok}");
        }
        for bad in [
            "2024-10-21T11:27:58.14473021Z",
            "2024-10-21T11:27:58.Z",
            "2024-10-21 11:27:58Z",
            "2024-10-21T11:27:58+00:00",
            "2024-10-21T11:27:58.1",
        ] {
            assert!(!is_mde_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn key_scanner_sees_only_top_level_keys_in_order() {
        let keys = top_level_keys(r#"{ "b": {"x": 1}, "a\"q": [ {"y": "z:"} ], "c" : null }"#);
        assert_eq!(keys, ["b", "a\"q", "c"]);
    }

    #[test]
    fn guids_are_lower_case() {
        assert!(is_guid("ed74c544-91d4-414d-8805-5c26e028ef7e"));
        assert!(!is_guid("ED74C544-91D4-414D-8805-5C26E028EF7E"));
        assert!(!is_guid("ed74c544"));
    }
}
