//! The OpenAPI document describes the public API as served.

use crate::harness::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_endpoint() {
    let server = TestServer::start().await;
    // Served without a token: it is documentation.
    let r = server.anonymous().get("/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let expect = [
        ("/api/machines/{id}/restrictCodeExecution", "post"),
        ("/api/machines/{id}/unrestrictCodeExecution", "post"),
        ("/api/machines/{id}/offboard", "post"),
        ("/api/machineactions/{id}", "get"),
        ("/api/machineactions", "get"),
        ("/api/machineactions/{id}/cancel", "post"),
        ("/api/machines", "get"),
        ("/api/machines/{id}", "get"),
        ("/api/machines/{id}/events", "get"),
        ("/api/machines/{id}/enforcement", "get"),
        ("/api/indicators", "post"),
        ("/api/indicators", "get"),
        ("/api/indicators/{id}", "delete"),
        ("/api/indicators/import", "post"),
        ("/api/machines/{id}", "patch"),
    ];
    for (path, method) in expect {
        let item = paths.get(path).unwrap_or_else(|| {
            panic!(
                "{path} missing; have {:?}",
                paths.keys().collect::<Vec<_>>()
            )
        });
        assert!(item.get(method).is_some(), "{path} has no {method}");
        assert!(
            item[method]["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{path} {method} documents its responses"
        );
    }
    // Restrict documents its 201 and the duplicate 400; every path is under /api.
    let restrict = &paths["/api/machines/{id}/restrictCodeExecution"]["post"];
    assert!(restrict["responses"].get("201").is_some(), "{restrict}");
    assert!(restrict["responses"].get("400").is_some());
    // Offboard documents its 201, its 400s and what it needs.
    let offboard = &paths["/api/machines/{id}/offboard"]["post"];
    assert!(offboard["responses"].get("201").is_some(), "{offboard}");
    assert!(offboard["responses"].get("400").is_some());
    assert!(offboard["description"]
        .as_str()
        .is_some_and(|d| d.contains("Machine.Offboard") && d.contains("Offboarded")));
    assert!(
        paths.keys().all(|p| p.starts_with("/api/")),
        "{:?}",
        paths.keys()
    );
    // Delete documents its 204; the indicator schemas are declared.
    assert!(paths["/api/indicators/{id}"]["delete"]["responses"]
        .get("204")
        .is_some());
    for schema in [
        "Indicator",
        "IndicatorRequest",
        "MachineEvent",
        "MachineEnforcement",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} is declared"
        );
    }
    // The bearer scheme and the error envelope schema are declared.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"].get("ErrorBody").is_some());
    // Every $ref points at a declared schema.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref to {name}"
        );
    }
    server.stop().await;
}
