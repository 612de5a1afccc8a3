//! Golden comparison with MachineAction bodies recorded from the real service: our 201
//! has the same keys, in the same order, with the same JSON type per key.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{TestServer, ALL_ROLES};
use crate::wire::{kind, top_level_keys};

/// A copy of the project's `shared/spec/captured/` (responses recorded from the real
/// service), kept in the repository so the suite runs from any clone.
fn captured_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/captured")
}

/// Files that are not a `{"body": MachineAction}` JSON document, skipped by name.
const NOT_GOLDEN: &[&str] = &[
    // Verbatim blog post output: malformed JSON (a missing `]`), and a collection.
    "cloudarchitekt_machineactions_list_liveresponse.txt",
];

/// A recorded MachineAction: the raw text of its `body` and the parsed value.
struct Golden {
    file: String,
    keys: Vec<String>,
    body: serde_json::Map<String, Value>,
}

fn goldens() -> Vec<Golden> {
    let dir = captured_dir();
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if NOT_GOLDEN.contains(&name.as_str()) {
            continue;
        }
        assert!(
            name.ends_with(".json"),
            "unexpected file in captured/: {name}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(body) = doc["body"].as_object() else {
            panic!("{name} has no object `body`")
        };
        if !body
            .get("@odata.context")
            .and_then(Value::as_str)
            .is_some_and(|c| c.ends_with("#MachineActions/$entity"))
        {
            continue;
        }
        // The raw body text: from `"body"` to the end; the scanner stops at its keys.
        let start = text.find("\"body\"").unwrap();
        let body_text = &text[start + 6..];
        let body_text = &body_text[body_text.find('{').unwrap()..];
        let keys = top_level_keys(&balanced(body_text));
        out.push(Golden {
            file: name,
            keys,
            body: body.clone(),
        });
    }
    out
}

/// The first balanced `{...}` of `text` (strings respected).
fn balanced(text: &str) -> String {
    let mut depth = 0;
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return text[..=i].to_string();
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced JSON body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_machine_actions_match_the_recorded_ones() {
    let goldens = goldens();
    let names: Vec<&str> = goldens.iter().map(|g| g.file.as_str()).collect();
    for must in [
        "sekoia_restrictCodeExecution_201.json",
        "pingone_davinci_restrictCodeExecution_201.json",
        "pingone_davinci_unrestrictCodeExecution_201.json",
    ] {
        assert!(
            names.contains(&must),
            "{must} not compared; compared: {names:?}"
        );
    }

    let server = TestServer::start().await;
    let api = server.api(ALL_ROLES).await;
    let dev = server.enroll("golden-host").await;
    let restrict = api.restrict(&dev.machine_id, "New new comment").await;
    assert_eq!(restrict.status, 201, "{}", restrict.text);
    let id = restrict.json()["id"].as_str().unwrap().to_string();
    assert_eq!(api.cancel(&id, "make room").await.status, 200);
    let unrestrict = api.unrestrict(&dev.machine_id, "clean").await;
    assert_eq!(unrestrict.status, 201, "{}", unrestrict.text);

    for g in &goldens {
        let ours = match g.body["type"].as_str() {
            Some("UnrestrictCodeExecution") => &unrestrict,
            // Restrict, and other action types recorded with the same entity shape.
            _ => &restrict,
        };
        let our_keys = top_level_keys(&ours.text);
        assert_eq!(our_keys, g.keys, "key order differs from {}", g.file);
        let v = ours.json();
        for key in &g.keys {
            let theirs = &g.body[key];
            let mine = &v[key.as_str()];
            // A recorded null means "nullable"; where the recording has a value, and
            // for our restrict actions the value is set, the types must agree.
            if theirs.is_null() {
                let expect_set = matches!(key.as_str(), "machineId" | "computerDnsName");
                if !expect_set {
                    assert!(
                        mine.is_null(),
                        "{}: {key} is null in the recording and {mine} in ours",
                        g.file
                    );
                }
                continue;
            }
            assert_eq!(
                kind(mine),
                kind(theirs),
                "{}: {key} is {theirs} there and {mine} here",
                g.file
            );
        }
    }
    server.stop().await;
}
