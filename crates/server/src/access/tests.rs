use super::*;
use appfence_core::rbac::DeviceRule;

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: id.into(),
    }
}

fn role(line: usize, name: &str, permissions: &[&str], groups: &[&str]) -> RoleSpec {
    RoleSpec {
        line: Some(line),
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        user_groups: groups.iter().map(|g| g.to_string()).collect(),
        tenant: None,
    }
}

fn device_group(line: usize, name: &str, rank: u32) -> DeviceGroupSpec {
    DeviceGroupSpec {
        line: Some(line),
        name: name.into(),
        rank,
        id: None,
        rule: DeviceRule::NamePrefix("srv-".into()),
        user_groups: vec![],
        tenant: None,
    }
}

fn issuer(line: usize, url: &str) -> IssuerSpec {
    IssuerSpec {
        line: Some(line),
        issuer: url.into(),
        audiences: vec!["api://appfence".into()],
        jwks_uri: None,
        tenant: None,
        console: None,
    }
}

#[test]
fn entries_default_to_the_only_tenant() {
    let spec = AccessSpec {
        issuers: vec![issuer(1, "https://idp.example/realms/corp")],
        roles: vec![role(
            5,
            "Tier 2",
            &["Active remediation actions", "View data"],
            &["g"],
        )],
        device_groups: vec![device_group(9, "Servers", 1)],
    };
    let policy = resolve(&spec, &[tenant("t1")]).unwrap();
    assert_eq!(policy.issuers[0].tenant_id, "t1");
    let rbac = policy.rbac("t1");
    assert_eq!(rbac.roles()[0].permissions.len(), 2);
    assert_eq!(rbac.device_groups()[0].id, default_group_id("Servers"));
    // A tenant without declarations has no roles and no groups.
    assert!(policy.rbac("other").roles().is_empty());

    let err = resolve(&spec, &[tenant("t1"), tenant("t2")]).unwrap_err();
    assert_eq!(
        err,
        "line 1: several tenants exist: say which one with tenant = \"...\""
    );
    let mut named = spec.clone();
    named.roles[0].tenant = Some("nope".into());
    assert_eq!(
        resolve(&named, &[tenant("t1")]).unwrap_err(),
        "line 5: tenant 'nope' does not exist"
    );
}

#[test]
fn refusals_name_the_line_of_the_offending_entry() {
    let spec = |roles, groups| AccessSpec {
        issuers: vec![],
        roles,
        device_groups: groups,
    };
    let t = [tenant("t1")];
    assert_eq!(
        resolve(&spec(vec![role(3, "R", &["Root"], &[])], vec![]), &t).unwrap_err(),
        "line 3: role 'R': unknown permission 'Root'; known permissions: View data, Alerts investigation, Active remediation actions, Live response capabilities, Manage security settings, Manage portal system settings"
    );
    assert_eq!(
        resolve(&spec(vec![role(3, "R", &[], &[])], vec![]), &t).unwrap_err(),
        "line 3: role 'R' grants no permissions"
    );
    assert_eq!(
        resolve(
            &spec(
                vec![
                    role(3, "R", &["View data"], &[]),
                    role(8, "r", &["View data"], &[])
                ],
                vec![]
            ),
            &t
        )
        .unwrap_err(),
        "line 8: role 'r' is declared twice"
    );
    assert_eq!(
        resolve(
            &spec(
                vec![],
                vec![device_group(2, "A", 1), device_group(12, "B", 1)]
            ),
            &t
        )
        .unwrap_err(),
        "line 12: device group 'B': rank 1 is already used by another group"
    );
}

#[test]
fn issuer_urls_must_be_https_except_on_loopback() {
    let t = [tenant("t1")];
    let with = |url: &str, jwks: Option<&str>| AccessSpec {
        issuers: vec![IssuerSpec {
            jwks_uri: jwks.map(str::to_string),
            ..issuer(4, url)
        }],
        ..AccessSpec::default()
    };
    assert!(resolve(&with("http://127.0.0.1:9999/realms/x", None), &t).is_ok());
    assert!(resolve(
        &with("http://localhost/x", Some("http://[::1]:80/keys")),
        &t
    )
    .is_ok());
    assert_eq!(
        resolve(&with("http://idp.example/x", None), &t).unwrap_err(),
        "line 4: issuer 'http://idp.example/x' must use https (plain http is accepted only for loopback)"
    );
    assert_eq!(
        resolve(&with("https://idp.example/x", Some("ftp://idp/keys")), &t).unwrap_err(),
        "line 4: jwks_uri 'ftp://idp/keys' must be an https:// URL"
    );
    let mut no_audience = with("https://idp.example/x", None);
    no_audience.issuers[0].audiences.clear();
    assert_eq!(
        resolve(&no_audience, &t).unwrap_err(),
        "line 4: issuer 'https://idp.example/x' needs at least one audience"
    );
    let mut twice = with("https://idp.example/x", None);
    twice.issuers.push(issuer(9, "https://idp.example/x"));
    assert_eq!(
        resolve(&twice, &t).unwrap_err(),
        "line 9: issuer 'https://idp.example/x' is declared twice"
    );
    // A host that merely starts with a loopback name is not loopback.
    assert!(check_url("issuer", "http://localhost.evil.example/x").is_err());
    assert!(check_url("issuer", "http://127.0.0.1.evil.example/x").is_err());
}

#[test]
fn the_holder_swaps_whole_policies() {
    let holder = AccessHolder::new(AccessPolicy::default());
    let before = holder.current();
    let spec = AccessSpec {
        roles: vec![role(1, "V", &["View data"], &["g"])],
        ..AccessSpec::default()
    };
    holder.replace(resolve(&spec, &[tenant("t1")]).unwrap());
    assert!(before.rbac("t1").roles().is_empty());
    assert_eq!(holder.current().rbac("t1").roles().len(), 1);
}

#[test]
fn machine_groups_forget_on_clear_and_refuse_answers_read_before_it() {
    let groups = MachineGroups::default();
    let before = groups.generation();
    groups.remember(before, "m1", (5, Some("Servers".into())));
    assert_eq!(groups.get("m1"), Some((5, Some("Servers".into()))));
    // A lookup starts, a reload clears, the lookup finishes with what it read before.
    let lookup = groups.generation();
    groups.clear();
    assert_eq!(groups.get("m1"), None);
    groups.remember(lookup, "m1", (5, Some("Servers".into())));
    assert_eq!(groups.get("m1"), None, "a stale answer is not kept");
    groups.remember(groups.generation(), "m1", (0, None));
    assert_eq!(groups.get("m1"), Some((0, None)));
}

#[test]
fn console_clients_get_their_defaults_and_are_checked() {
    let t = [tenant("t1")];
    let with = |console: ConsoleClientSpec| AccessSpec {
        issuers: vec![IssuerSpec {
            console: Some(console),
            ..issuer(4, "https://login.example:8443/tid/v2.0")
        }],
        ..AccessSpec::default()
    };
    let client = ConsoleClientSpec {
        client_id: " console-app ".into(),
        client_secret: None,
        display_name: None,
        scopes: None,
    };
    let policy = resolve(&with(client.clone()), &t).unwrap();
    assert_eq!(
        policy.issuers[0].console,
        Some(ConsoleClient {
            client_id: "console-app".into(),
            client_secret: None,
            display_name: "login.example".into(),
            scopes: DEFAULT_CONSOLE_SCOPES.into(),
        })
    );
    // Without a console client, the issuer serves API tokens only.
    let api_only = resolve(
        &AccessSpec {
            issuers: vec![issuer(1, "https://idp.example")],
            ..AccessSpec::default()
        },
        &t,
    )
    .unwrap();
    assert_eq!(api_only.issuers[0].console, None);

    let refused = |c: ConsoleClientSpec| resolve(&with(c), &t).unwrap_err();
    let at = "line 4: issuer 'https://login.example:8443/tid/v2.0'";
    assert_eq!(
        refused(ConsoleClientSpec {
            client_id: "".into(),
            ..client.clone()
        }),
        format!("{at}: console_client_id must not be empty")
    );
    assert_eq!(
        refused(ConsoleClientSpec {
            client_secret: Some(" ".into()),
            ..client.clone()
        }),
        format!("{at}: console_client_secret must not be empty")
    );
    assert_eq!(
        refused(ConsoleClientSpec {
            display_name: Some("".into()),
            ..client.clone()
        }),
        format!("{at}: display_name must not be empty")
    );
    assert_eq!(
        refused(ConsoleClientSpec {
            scopes: Some("profile openid_extra".into()),
            ..client.clone()
        }),
        format!("{at}: console_scopes must include openid (OpenID Connect sign-in)")
    );
    let named = resolve(
        &with(ConsoleClientSpec {
            display_name: Some(" Contoso ".into()),
            scopes: Some("openid  groups".into()),
            ..client
        }),
        &t,
    )
    .unwrap();
    let console = named.issuers[0].console.as_ref().unwrap();
    assert_eq!(
        (console.display_name.as_str(), console.scopes.as_str()),
        ("Contoso", "openid groups")
    );
}
