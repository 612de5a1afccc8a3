//! Spec §4: OData on machine actions and machines, checked against a model of what the
//! test created.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;

use crate::harness::{Api, Device, TestServer, ALL_ROLES};

#[derive(Clone, Debug)]
struct Act {
    id: String,
    kind: &'static str,
    status: &'static str,
    requestor: String,
    machine: String,
    host: String,
    created: String,
    /// `created` as 100 ns ticks: trimmed fractions do not sort as text.
    ticks: i64,
}

/// Ids of the actions matching `pred`.
fn ids(model: &[Act], pred: impl Fn(&Act) -> bool) -> BTreeSet<String> {
    model
        .iter()
        .filter(|a| pred(a))
        .map(|a| a.id.clone())
        .collect()
}

/// The ids of one page, checking each item's shape.
fn page_ids(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no value: {v}"))
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

fn ticks(t: &str) -> i64 {
    appfence_proto::Timestamp::parse(t)
        .unwrap_or_else(|| panic!("bad timestamp {t}"))
        .ticks()
}

async fn list(api: &Api, path_and_query: &str) -> Value {
    let r = api.get(path_and_query).await;
    assert_eq!(r.status, 200, "{path_and_query}: {}", r.text);
    r.json()
}

/// `$filter` with the value URL-encoded by reqwest, exactly as a client library would.
async fn filter(api: &Api, f: &str) -> BTreeSet<String> {
    let r = api
        .send(
            api.request(reqwest::Method::GET, "/api/machineactions")
                .query(&[("$filter", f), ("$top", "10000")]),
        )
        .await;
    assert_eq!(r.status, 200, "$filter={f}: {}", r.text);
    page_ids(&r.json()).into_iter().collect()
}

async fn create(api: &Api, dev: &Device, kind: &str, app: &str) -> Act {
    let r = if kind == "RestrictCodeExecution" {
        api.restrict(&dev.machine_id, "odata").await
    } else {
        api.unrestrict(&dev.machine_id, "odata").await
    };
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    Act {
        id: v["id"].as_str().unwrap().into(),
        kind: if kind == "RestrictCodeExecution" {
            "RestrictCodeExecution"
        } else {
            "UnrestrictCodeExecution"
        },
        status: "Pending",
        requestor: app.into(),
        machine: dev.machine_id.clone(),
        host: dev.hostname.clone(),
        created: v["creationDateTimeUtc"].as_str().unwrap().into(),
        ticks: ticks(v["creationDateTimeUtc"].as_str().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_paging_and_ordering_on_actions_and_machines() {
    let server = TestServer::start().await;
    let tenant = server.tenant_id.clone();
    let obrien = server.app_in(&tenant, "O'Brien", ALL_ROLES).await;
    let obrien = server.api_for(&obrien).await;
    let playbook = server.app_in(&tenant, "Playbook", ALL_ROLES).await;
    let playbook = server.api_for(&playbook).await;
    let hosts = ["demo-a0", "demo-a1", "demo-a2", "other-b0", "other-b1"];
    let mut devs = Vec::new();
    for h in hosts {
        devs.push(server.enroll(h).await);
    }

    // Ten actions: a restrict on each device, finished differently, then an unrestrict.
    let mut model: Vec<Act> = Vec::new();
    for (i, dev) in devs.iter().enumerate() {
        let (api, name) = if i % 2 == 0 {
            (&obrien, "O'Brien")
        } else {
            (&playbook, "Playbook")
        };
        let mut a = create(api, dev, "RestrictCodeExecution", name).await;
        match i {
            0 | 3 => {
                dev.ack(&a.id).await;
                assert_eq!(dev.report(&a.id, "Succeeded").await["applied"], true);
                a.status = "Succeeded";
            }
            2 => {
                dev.ack(&a.id).await;
                assert_eq!(dev.report(&a.id, "Failed").await["applied"], true);
                a.status = "Failed";
            }
            _ => {
                assert_eq!(api.cancel(&a.id, "no").await.status, 200);
                a.status = "Cancelled";
            }
        }
        model.push(a);
    }
    for (i, dev) in devs.iter().enumerate() {
        let mut a = create(&playbook, dev, "UnrestrictCodeExecution", "Playbook").await;
        if i == 3 {
            dev.ack(&a.id).await;
            a.status = "InProgress";
        }
        model.push(a);
    }
    let all = ids(&model, |_| true);
    assert_eq!(all.len(), 10);
    let api = &playbook;

    // Each supported field.
    let d1 = devs[1].machine_id.clone();
    let one = model[4].id.clone();
    let mid = model[5].created.clone();
    let mid_ticks = model[5].ticks;
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (
            "status eq 'Pending'".into(),
            ids(&model, |a| a.status == "Pending"),
        ),
        (
            "status ne 'Pending'".into(),
            ids(&model, |a| a.status != "Pending"),
        ),
        (
            "status eq 'InProgress'".into(),
            ids(&model, |a| a.status == "InProgress"),
        ),
        (
            "type eq 'UnrestrictCodeExecution'".into(),
            ids(&model, |a| a.kind == "UnrestrictCodeExecution"),
        ),
        (
            format!("machineId eq '{d1}'"),
            ids(&model, |a| a.machine == d1),
        ),
        (format!("id eq '{one}'"), ids(&model, |a| a.id == one)),
        (
            "requestor eq 'O''Brien'".into(),
            ids(&model, |a| a.requestor == "O'Brien"),
        ),
        (
            "requestor eq 'Playbook'".into(),
            ids(&model, |a| a.requestor == "Playbook"),
        ),
        (
            format!("creationDateTimeUtc ge {mid}"),
            ids(&model, |a| a.ticks >= mid_ticks),
        ),
        (
            format!("creationDateTimeUtc lt '{mid}'"),
            ids(&model, |a| a.ticks < mid_ticks),
        ),
        (
            "computerDnsName eq 'demo-a2'".into(),
            ids(&model, |a| a.host == "demo-a2"),
        ),
        // Combinations.
        (
            "status eq 'Pending' and type eq 'UnrestrictCodeExecution'".into(),
            ids(&model, |a| {
                a.status == "Pending" && a.kind == "UnrestrictCodeExecution"
            }),
        ),
        (
            "status eq 'Cancelled' or status eq 'Failed'".into(),
            ids(&model, |a| a.status == "Cancelled" || a.status == "Failed"),
        ),
        (
            "(status eq 'Cancelled' or status eq 'Failed') and requestor eq 'O''Brien'".into(),
            ids(&model, |a| {
                (a.status == "Cancelled" || a.status == "Failed") && a.requestor == "O'Brien"
            }),
        ),
        (
            "status eq 'Cancelled' or (status eq 'Failed' and requestor eq 'Playbook')".into(),
            ids(&model, |a| a.status == "Cancelled"),
        ),
        (
            "status in ('Succeeded','InProgress')".into(),
            ids(&model, |a| {
                a.status == "Succeeded" || a.status == "InProgress"
            }),
        ),
        (
            format!(
                "machineId in ('{d1}', '{}') and type eq 'RestrictCodeExecution'",
                devs[2].machine_id
            ),
            ids(&model, |a| {
                (a.machine == d1 || a.machine == devs[2].machine_id)
                    && a.kind == "RestrictCodeExecution"
            }),
        ),
        // Property names and keywords are case-insensitive.
        (
            "STATUS eq 'Pending'".into(),
            ids(&model, |a| a.status == "Pending"),
        ),
        (
            format!("MachineId eq '{d1}' AND Type eq 'RestrictCodeExecution'"),
            ids(&model, |a| {
                a.machine == d1 && a.kind == "RestrictCodeExecution"
            }),
        ),
        // Injection attempts are just strings that match nothing.
        ("id eq 'x'' or 1=1 --'".into(), BTreeSet::new()),
        ("requestor eq 'x'' OR ''1''=''1'".into(), BTreeSet::new()),
        (
            "requestor eq 'Playbook''; DROP TABLE actions; --'".into(),
            BTreeSet::new(),
        ),
    ];
    for (f, want) in &cases {
        assert_eq!(&filter(api, f).await, want, "$filter={f}");
    }
    assert!(cases.iter().filter(|(_, w)| !w.is_empty()).count() > 15);
    // Still all there after the injection attempts.
    assert_eq!(filter(api, "requestor ne 'x'").await.len(), 10);

    // `+` is a space in the raw query string; `%27` and literal quotes both work.
    let plus = list(
        api,
        "/api/machineactions?$filter=status+eq+'Pending'&$top=100",
    )
    .await;
    assert_eq!(
        page_ids(&plus).into_iter().collect::<BTreeSet<_>>(),
        ids(&model, |a| a.status == "Pending")
    );
    let quoted = list(
        api,
        "/api/machineactions?$filter=requestor+eq+%27O%27%27Brien%27",
    )
    .await;
    assert_eq!(
        page_ids(&quoted).into_iter().collect::<BTreeSet<_>>(),
        ids(&model, |a| a.requestor == "O'Brien")
    );

    // Default order: newest first; $orderby asc reverses it.
    let mut by_time = model.clone();
    by_time.sort_by_key(|a| std::cmp::Reverse(a.ticks));
    let newest_first: Vec<String> = by_time.iter().map(|a| a.id.clone()).collect();
    let default = list(api, "/api/machineactions").await;
    assert_eq!(page_ids(&default), newest_first);
    assert!(default.get("@odata.nextLink").is_none(), "{default}");
    assert!(default.get("@odata.count").is_none(), "{default}");
    let desc = list(api, "/api/machineactions?$orderby=creationDateTimeUtc+desc").await;
    assert_eq!(page_ids(&desc), newest_first);
    let asc = list(
        api,
        "/api/machineactions?$orderby=creationDateTimeUtc%20asc",
    )
    .await;
    let oldest_first: Vec<String> = newest_first.iter().rev().cloned().collect();
    assert_eq!(page_ids(&asc), oldest_first);

    // $top/$skip.
    let top3 = list(api, "/api/machineactions?$top=3").await;
    assert_eq!(page_ids(&top3), newest_first[..3]);
    let skip8 = list(api, "/api/machineactions?$skip=8").await;
    assert_eq!(page_ids(&skip8), newest_first[8..]);
    assert!(skip8.get("@odata.nextLink").is_none());
    let window = list(api, "/api/machineactions?$top=2&$skip=3").await;
    assert_eq!(page_ids(&window), newest_first[3..5]);

    // $count.
    let counted = list(api, "/api/machineactions?$count=true&$top=2").await;
    assert_eq!(counted["@odata.count"], 10, "{counted}");
    assert!(counted["@odata.count"].is_u64());
    assert_eq!(page_ids(&counted).len(), 2);
    let pending = ids(&model, |a| a.status == "Pending").len();
    let counted = list(
        api,
        "/api/machineactions?$count=true&$filter=status+eq+'Pending'",
    )
    .await;
    assert_eq!(counted["@odata.count"], pending as u64);

    // nextLink: follow it to the end; no duplicates, no gaps, same order.
    let mut seen = Vec::new();
    let mut page = list(
        api,
        "/api/machineactions?$top=3&$filter=requestor+ne+'Nobody'",
    )
    .await;
    let mut hops = 0;
    loop {
        seen.extend(page_ids(&page));
        match page.get("@odata.nextLink").and_then(Value::as_str) {
            Some(link) => {
                assert!(link.starts_with(&server.state.public_url()), "{link}");
                // A keyset continuation, not a deep $skip.
                assert!(link.contains("$skiptoken="), "{link}");
                assert!(!link.contains("$skip="), "{link}");
                hops += 1;
                assert!(hops < 10, "nextLink never ends");
                page = list(api, link).await;
            }
            None => break,
        }
    }
    assert_eq!(hops, 3, "10 items in pages of 3");
    assert_eq!(seen, newest_first, "no duplicates, no gaps");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10);
    // The versioned prefix links back to itself.
    let v1 = list(api, "/api/v1.0/machineactions?$top=4").await;
    let link = v1["@odata.nextLink"].as_str().expect("nextLink");
    assert!(link.contains("/api/v1.0/machineactions?"), "{link}");
    let v1_next = list(api, link).await;
    assert_eq!(page_ids(&v1_next), newest_first[4..8]);

    // Machines.
    let m = |path: &str| {
        let api = api.clone();
        let path = path.to_string();
        async move {
            let v = list(&api, &path).await;
            let mut names: Vec<String> = v["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["computerDnsName"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            (names, v)
        }
    };
    let (names, _) = m("/api/machines?$filter=startswith(computerDnsName,'demo-')").await;
    assert_eq!(names, ["demo-a0", "demo-a1", "demo-a2"]);
    let (names, _) = m("/api/machines?$filter=startswith(computerDnsName,'demo-')+and+computerDnsName+ne+'demo-a1'").await;
    assert_eq!(names, ["demo-a0", "demo-a2"]);
    let (names, _) = m("/api/machines?$filter=computerDnsName+eq+'other-b0'").await;
    assert_eq!(names, ["other-b0"]);
    let (names, _) = m(&format!(
        "/api/machines?$filter=id+eq+'{}'",
        devs[4].machine_id
    ))
    .await;
    assert_eq!(names, ["other-b1"]);
    let (names, _) = m(&format!(
        "/api/machines?$filter=aadDeviceId+eq+'{}'",
        devs[3].aad_device_id
    ))
    .await;
    assert_eq!(names, ["other-b0"]);
    let (names, _) = m("/api/machines?$filter=osPlatform+eq+'Linux'+and+healthStatus+eq+'Active'+and+onboardingStatus+eq+'Onboarded'").await;
    assert_eq!(names.len(), 5);
    let (names, _) =
        m("/api/machines?$filter=rbacGroupId+eq+0+and+lastIpAddress+eq+'10.0.0.7'").await;
    assert_eq!(names.len(), 5);
    let (names, _) = m("/api/machines?$filter=version+eq+'Ubuntu+24.04'+and+riskScore+eq+'None'+and+exposureLevel+eq+'None'+and+deviceValue+eq+'Normal'").await;
    assert_eq!(names.len(), 5);
    // Timestamps on machines: every device was seen before now + 1 h, none before 2000.
    let later = appfence_proto::Timestamp::parse(&model[9].created)
        .unwrap()
        .plus(std::time::Duration::from_secs(3600));
    let (names, _) = m(&format!("/api/machines?$filter=lastSeen+lt+{later}")).await;
    assert_eq!(names.len(), 5);
    let (names, _) = m(&format!(
        "/api/machines?$filter=lastSeen+ge+{later}+or+lastSeen+lt+2000-01-01T00:00:00Z"
    ))
    .await;
    assert!(names.is_empty(), "{names:?}");
    let (names, _) = m("/api/machines?$filter=machineTags/any(t:+t+eq+'vip')").await;
    assert!(names.is_empty());
    let (names, _) = m("/api/machines?$filter=ComputerDnsName+in+('demo-a0','other-b1')").await;
    assert_eq!(names, ["demo-a0", "other-b1"]);
    let (names, v) = m("/api/machines?$skip=10").await;
    assert!(
        names.is_empty() && v.get("@odata.nextLink").is_none(),
        "{v}"
    );
    let (names, _) = m("/api/machines?$filter=osPlatform+eq+'Windows10'").await;
    assert!(names.is_empty());
    let (names, _) = m("/api/machines?$filter=computerDnsName+eq+'x''+or+''1''=''1'").await;
    assert!(names.is_empty(), "injection on machines: {names:?}");
    let (names, v) = m("/api/machines?$top=2&$count=true").await;
    assert_eq!(names.len(), 2);
    assert_eq!(v["@odata.count"], 5);
    let mut all_names = Vec::new();
    let mut page = v;
    for _ in 0..5 {
        all_names.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["computerDnsName"].as_str().unwrap().to_string()),
        );
        match page.get("@odata.nextLink").and_then(Value::as_str) {
            Some(link) => page = list(api, link).await,
            None => break,
        }
    }
    all_names.sort();
    assert_eq!(all_names, hosts, "machine pages cover every machine once");
    server.stop().await;
}

/// A client following `@odata.nextLink` must always make progress: a link back to the
/// same rows would loop forever. `$top=0` asks for an empty page: there is nothing to page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_links_always_make_progress() {
    let server = TestServer::start().await;
    let api = server.api(ALL_ROLES).await;
    for h in ["page-0", "page-1", "page-2"] {
        let dev = server.enroll(h).await;
        assert_eq!(api.restrict(&dev.machine_id, "p").await.status, 201);
    }
    for collection in ["/api/machineactions", "/api/machines"] {
        let all = page_ids(&list(&api, &format!("{collection}?$top=100")).await);
        for (top, skip) in [(1u64, 0u64), (2, 1), (0, 0), (0, 2)] {
            let path = format!("{collection}?$top={top}&$skip={skip}");
            let v = list(&api, &path).await;
            assert_eq!(
                page_ids(&v).len() as u64,
                top.min(3u64.saturating_sub(skip)),
                "{path}"
            );
            if let Some(link) = v.get("@odata.nextLink").and_then(Value::as_str) {
                // The next page is the rows right after this one.
                let next = page_ids(&list(&api, link).await);
                let from = (skip + top) as usize;
                assert_eq!(
                    next,
                    all[from..(from + top as usize).min(all.len())],
                    "{path} -> {link}"
                );
            }
            if top == 0 {
                assert!(v.get("@odata.nextLink").is_none(), "{path}: {v}");
            }
        }
    }
    server.stop().await;
}

/// Following `@odata.nextLink` (keyset continuations) through every order of the
/// actions gives every row exactly once, in the order of one big page, on SQLite and on
/// PostgreSQL; a tampered or foreign continuation is a 400 in the MDE envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_links_walk_every_row_once_on_both_stores() {
    let sqlite = TestServer::start().await;
    walk_every_order(&sqlite).await;
    sqlite.stop().await;
    let Some(cluster) = appfence_testkit::postgres_or_skip("next_links_walk_every_row_once") else {
        return;
    };
    let url = cluster.fresh_database().expect("a fresh database");
    let pg = TestServer::start_on_postgres(&url, |_| {}, None).await;
    walk_every_order(&pg).await;
    pg.stop().await;
}

async fn walk_every_order(server: &TestServer) {
    let tenant = server.tenant_id.clone();
    let a = server.app_in(&tenant, "App3", ALL_ROLES).await;
    let a = server.api_for(&a).await;
    let b = server.app_in(&tenant, "bob", ALL_ROLES).await;
    let b = server.api_for(&b).await;
    for i in 0..7 {
        let dev = server.enroll(&format!("walk-{i}")).await;
        let api = if i % 2 == 0 { &a } else { &b };
        let r = api.restrict(&dev.machine_id, "walk").await;
        assert_eq!(r.status, 201, "{}", r.text);
        if i % 3 != 0 {
            let id = r.json()["id"].as_str().unwrap().to_string();
            assert_eq!(api.cancel(&id, "walk").await.status, 200);
            assert_eq!(api.unrestrict(&dev.machine_id, "walk").await.status, 201);
        }
    }
    let fields = [
        "id",
        "status",
        "machineId",
        "type",
        "requestor",
        "creationDateTimeUtc",
        "lastUpdateDateTimeUtc",
        "computerDnsName",
        "externalId",
    ];
    let mut queries = vec![
        "$top=3".to_string(),
        "$top=2&$filter=status+eq+'Pending'".into(),
    ];
    for f in fields {
        queries.push(format!("$top=3&$orderby={f}+asc"));
        queries.push(format!("$top=4&$orderby={f}+desc&$count=true"));
    }
    let mut last_link = None;
    for q in &queries {
        let whole_q: Vec<&str> = q
            .split('&')
            .map(|kv| {
                if kv.starts_with("$top=") {
                    "$top=1000"
                } else {
                    kv
                }
            })
            .collect();
        let whole_q = whole_q.join("&");
        let whole = page_ids(&list(&a, &format!("/api/machineactions?{whole_q}")).await);
        assert!(whole.len() >= 3, "{q}: {whole:?}");
        let mut seen = Vec::new();
        let mut page = list(&a, &format!("/api/machineactions?{q}")).await;
        loop {
            seen.extend(page_ids(&page));
            assert!(seen.len() <= whole.len(), "{q}: {seen:?}");
            if q.contains("$count=true") {
                assert_eq!(page["@odata.count"], whole.len() as u64, "{q}");
            }
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(link) => {
                    last_link = Some(link.to_string());
                    page = list(&a, link).await;
                }
                None => break,
            }
        }
        assert_eq!(seen, whole, "{q}: every row once, in order");
    }
    // A continuation of another query, or a tampered one: refused in the envelope.
    let link = last_link.expect("some query had more than one page");
    let token = link
        .split_once("$skiptoken=")
        .unwrap()
        .1
        .split('&')
        .next()
        .unwrap();
    for bad in [
        format!("/api/machineactions?$top=3&$orderby=status+asc&$skiptoken={token}"),
        "/api/machineactions?$top=3&$skiptoken=AAAA".to_string(),
    ] {
        let r = a.get(&bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        let v = r.json();
        assert!(v["error"]["code"].is_string(), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("$skiptoken"),
            "{v}"
        );
    }
}
