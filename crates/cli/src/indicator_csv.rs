//! MDE's indicator import file: a CSV whose first line names the columns (MDE's
//! indicator fields, matched case-insensitively), turned into Import Indicators items.
//! Only the checks of the file's form are here; the server checks the values.

use serde_json::{Map, Value};

use appfence_core::indicators::MAX_IMPORT_ITEMS;

/// Column names as MDE spells them, with the JSON key each becomes; `None`: accepted
/// and ignored.
const COLUMNS: &[(&str, Option<&str>)] = &[
    ("indicatorType", Some("indicatorType")),
    ("indicatorValue", Some("indicatorValue")),
    ("action", Some("action")),
    ("title", Some("title")),
    ("description", Some("description")),
    ("expirationTime", Some("expirationTime")),
    ("severity", Some("severity")),
    ("recommendedActions", Some("recommendedActions")),
    ("rbacGroupNames", Some("rbacGroupNames")),
    // The portal's sample file names it so.
    ("rbacGroups", Some("rbacGroupNames")),
    ("generateAlert", Some("generateAlert")),
    ("application", Some("application")),
    ("category", None),
    ("mitreTechniques", None),
];

/// The rows of `text` as indicator objects (empty cells left out), or what is wrong
/// with the file, naming the line.
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = records(text)?.into_iter();
    let (_, header) = records
        .next()
        .ok_or("the file is empty: its first line names the columns")?;
    let keys = header
        .iter()
        .map(|name| {
            COLUMNS
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(name.trim()))
                .map(|(_, key)| *key)
                .ok_or_else(|| {
                    format!(
                        "line 1: unknown column '{}'; columns: {}",
                        name.trim(),
                        COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                    )
                })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if fields.len() != keys.len() {
            return Err(format!(
                "line {line}: {} fields, but the first line names {} columns",
                fields.len(),
                keys.len()
            ));
        }
        let mut item = Map::new();
        for (key, field) in keys.iter().zip(fields) {
            let (Some(key), field) = (key, field.trim()) else {
                continue;
            };
            if !field.is_empty() {
                item.insert(key.to_string(), Value::String(field.to_string()));
            }
        }
        rows.push(Value::Object(item));
    }
    if rows.is_empty() {
        return Err("the file has no indicators".into());
    }
    if rows.len() > MAX_IMPORT_ITEMS {
        return Err(format!(
            "the file has {} indicators; an import takes at most {MAX_IMPORT_ITEMS}: split it",
            rows.len()
        ));
    }
    Ok(rows)
}

/// RFC 4180 records with the line each starts on: fields split on commas, quoted
/// fields may hold commas, line breaks and doubled quotes.
fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut out = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut line, mut start) = (1, 1);
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c)
            }
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                out.push((start, std::mem::take(&mut fields)));
                line += 1;
                start = line;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {start}: a quoted field is not closed"));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        out.push((start, fields));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mde_columns_become_indicator_items() {
        let h = "ab".repeat(32);
        let text = format!(
            "\u{feff}IndicatorType,IndicatorValue,ExpirationTime,Action,Severity,Title,Description,RecommendedActions,RbacGroups,Category,MitreTechniques,GenerateAlert\r\n\
             FileSha256,{h},2030-01-01T00:00:00.0Z,Block,High,bad tool,\"seen in \"\"IR-7\"\", twice\",,\"Web, Db\",Execution,T1059,True\r\n\
             \r\n\
             FileSha256,{h},,Audit,,t,d,,,,,true\n"
        );
        let rows = parse(&text).unwrap();
        assert_eq!(
            rows[0],
            json!({
                "indicatorType": "FileSha256", "indicatorValue": h,
                "expirationTime": "2030-01-01T00:00:00.0Z", "action": "Block",
                "severity": "High", "title": "bad tool",
                "description": "seen in \"IR-7\", twice", "rbacGroupNames": "Web, Db",
                "generateAlert": "True",
            })
        );
        assert_eq!(rows[1]["action"], "Audit");
        assert!(rows[1].get("expirationTime").is_none());
    }

    #[test]
    fn a_malformed_file_is_named() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("indicatorValue,colour\nx,y\n")
            .unwrap_err()
            .starts_with("line 1: unknown column 'colour'"));
        assert_eq!(
            parse("indicatorValue,action\nx\n").unwrap_err(),
            "line 2: 1 fields, but the first line names 2 columns"
        );
        assert!(parse("title\n\"open\n").unwrap_err().contains("not closed"));
        assert!(parse("title\n").unwrap_err().contains("no indicators"));
        let many = format!("title\n{}", "t\n".repeat(501));
        assert!(parse(&many).unwrap_err().contains("at most 500"));
    }
}
