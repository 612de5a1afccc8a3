//! Tenants are isolated: a token of one tenant can neither see nor act on another
//! tenant's machines and actions.

use crate::harness::{DeviceOpts, TestServer, ALL_ROLES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_and_acts_only_on_its_own() {
    let server = TestServer::start().await;
    let tenant_a = server.tenant_id.clone();
    let tenant_b = server.new_tenant("Fabrikam").await;
    let app_a = server.app_in(&tenant_a, "A app", ALL_ROLES).await;
    let app_b = server.app_in(&tenant_b, "B app", ALL_ROLES).await;
    let a = server.api_for(&app_a).await;
    let b = server.api_for(&app_b).await;
    let dev_a = server
        .enroll_with(&tenant_a, "host-a", DeviceOpts::default())
        .await;
    // The same DNS name may exist in both tenants.
    let dev_b = server
        .enroll_with(&tenant_b, "host-b", DeviceOpts::default())
        .await;
    let dev_b_same_name = server
        .enroll_with(&tenant_b, "host-a", DeviceOpts::default())
        .await;
    assert_ne!(dev_a.machine_id, dev_b_same_name.machine_id);

    let act_b = b.restrict(&dev_b.machine_id, "b's action").await;
    assert_eq!(act_b.status, 201, "{}", act_b.text);
    let act_b = act_b.json()["id"].as_str().unwrap().to_string();
    let act_a = a.restrict(&dev_a.machine_id, "a's action").await;
    assert_eq!(act_a.status, 201, "{}", act_a.text);
    let act_a = act_a.json()["id"].as_str().unwrap().to_string();

    // A cannot see or touch B's machine, by any of its names.
    for key in [&dev_b.machine_id, &dev_b.aad_device_id, &dev_b.hostname] {
        let e = a
            .get(&format!("/api/machines/{key}"))
            .await
            .assert_error(404, "ResourceNotFound");
        assert_eq!(e.message, format!("Machine {key} was not found"));
        a.restrict(key, "x")
            .await
            .assert_error(404, "ResourceNotFound");
        a.unrestrict(key, "x")
            .await
            .assert_error(404, "ResourceNotFound");
    }
    // ...nor B's action.
    let e = a
        .get(&format!("/api/machineactions/{act_b}"))
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(e.message, format!("MachineAction {act_b} was not found"));
    a.cancel(&act_b, "x")
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(
        b.action(&act_b).await["status"],
        "Pending",
        "B's action untouched"
    );

    // By DNS name, each tenant resolves its own host-a.
    assert_eq!(
        a.get("/api/machines/host-a").await.json()["id"],
        dev_a.machine_id.as_str()
    );
    assert_eq!(
        b.get("/api/machines/host-a").await.json()["id"],
        dev_b_same_name.machine_id.as_str()
    );

    // Lists show only the caller's own, also when filtering for the other's ids.
    let ids_of = |v: serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids_of(a.get("/api/machines").await.json()),
        std::slice::from_ref(&dev_a.machine_id)
    );
    let mut want_b = vec![dev_b.machine_id.clone(), dev_b_same_name.machine_id.clone()];
    want_b.sort();
    assert_eq!(ids_of(b.get("/api/machines").await.json()), want_b);
    assert_eq!(
        ids_of(a.get("/api/machineactions").await.json()),
        std::slice::from_ref(&act_a)
    );
    assert_eq!(
        ids_of(b.get("/api/machineactions").await.json()),
        std::slice::from_ref(&act_b)
    );
    let peek = a
        .get(&format!(
            "/api/machineactions?$filter=id+eq+'{act_b}'&$count=true"
        ))
        .await
        .json();
    assert_eq!(peek["value"], serde_json::json!([]));
    assert_eq!(peek["@odata.count"], 0);
    let peek = a
        .get(&format!(
            "/api/machines?$filter=id+eq+'{}'",
            dev_b.machine_id
        ))
        .await
        .json();
    assert_eq!(peek["value"], serde_json::json!([]));

    // A device of B cannot acknowledge A's action.
    let r = dev_b.ack_raw(&act_a).await;
    r.assert_error(404, "ResourceNotFound");
    assert_eq!(a.action(&act_a).await["status"], "Pending");

    // A token whose app exists only in A is refused at B's token endpoint.
    let r = server
        .http
        .post(server.url(&format!("/{tenant_b}/oauth2/v2.0/token")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app_a.client_id.as_str()),
            ("client_secret", app_a.secret.as_str()),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    // As Entra: the application is not found in B's directory (AADSTS700016).
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("was not found in the directory '{tenant_b}'")),
        "{body}"
    );
    server.stop().await;
}
