//! The commands end to end, in process: `serve --demo` with simulated devices, then the
//! client commands and `app create` against it.

use std::path::Path;
use std::process::ExitCode;

use appfence_server::ServerConfig;
use clap::Parser;
use serde_json::Value;

use crate::cmd::serve::{self, Serving};
use crate::config::ServeSettings;
use crate::{run_with, Cli, CliError, Env};

async fn cli(argv: &[&str], env: &Env) -> (Result<ExitCode, CliError>, String) {
    let cli = Cli::try_parse_from(argv).expect("valid arguments");
    let mut out = Vec::new();
    let r = run_with(cli, env, &mut out).await;
    (r, String::from_utf8(out).unwrap())
}

fn settings(data_dir: &Path, demo: bool) -> ServeSettings {
    ServeSettings {
        server: ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            ..ServerConfig::default()
        },
        demo,
        demo_devices: 2,
        demo_step_delay: std::time::Duration::from_millis(100),
        log_level: "warn".into(),
        log_format: Default::default(),
        config_path: None,
        database_url: None,
    }
}

fn client_env(serving: &Serving) -> Env {
    let demo = serving.demo().expect("demo provisioned");
    Env::from_pairs([
        ("APPFENCE_SERVER", serving.base_url()),
        ("APPFENCE_TENANT", demo.tenant_id.clone()),
        ("APPFENCE_CLIENT_ID", demo.client_id.clone()),
        (
            "APPFENCE_CLIENT_SECRET",
            demo.client_secret.expose().to_string(),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_server_and_client_commands() {
    let dir = private_tempdir();
    let data = dir.path().join("data");
    let serving = serve::start(settings(&data, true)).await.unwrap();
    let demo = serving.demo().unwrap().clone();
    assert_eq!(demo.machines.len(), 2);
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo.json")).unwrap()).unwrap();
    assert_eq!(on_disk["clientId"], demo.client_id.as_str());
    let env = client_env(&serving);

    // machines list, as JSON and as a table.
    let (r, out) = cli(&["appfence", "-o", "json", "machines", "list"], &env).await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 2, "{out}");
    let (r, out) = cli(&["appfence", "machines", "list"], &env).await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    assert!(out.starts_with("ID "), "{out}");
    assert!(out.contains("demo-linux-01"), "{out}");

    // restrict --wait ends Succeeded, with exit code 0.
    let machine = &demo.machines[0];
    let argv = [
        "appfence",
        "-o",
        "json",
        "restrict",
        machine,
        "--comment",
        "alert 1234",
        "--wait",
        "--timeout",
        "60s",
        "--poll-interval",
        "100ms",
    ];
    let (r, out) = cli(&argv, &env).await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS, "{out}");
    let action: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(action["status"], "Succeeded");
    assert_eq!(action["requestorComment"], "alert 1234");
    let action_id = action["id"].as_str().unwrap().to_string();

    // actions get shows it; a filter finds it.
    let (r, out) = cli(&["appfence", "actions", "get", &action_id], &env).await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    assert!(out.contains("status       Succeeded"), "{out}");
    let filter = format!("id eq '{action_id}'");
    let (r, out) = cli(
        &[
            "appfence", "-o", "json", "actions", "list", "--filter", &filter,
        ],
        &env,
    )
    .await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["value"][0]["id"], action_id.as_str(), "{out}");

    // An unrestrict without --wait is Pending; a second one is refused by the server, and
    // cancelling the first works.
    let (r, out) = cli(
        &[
            "appfence",
            "-o",
            "json",
            "unrestrict",
            machine,
            "--comment",
            "clean",
        ],
        &env,
    )
    .await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    let pending: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pending["type"], "UnrestrictCodeExecution");
    let (r, _) = cli(
        &["appfence", "unrestrict", machine, "--comment", "again"],
        &env,
    )
    .await;
    match r {
        Err(CliError::Client(e)) => {
            assert_eq!(e.code(), Some("ActiveRequestAlreadyExists"));
            assert!(
                e.to_string()
                    .contains("Action is already in progress (target "),
                "{e}"
            );
        }
        other => panic!("expected ActiveRequestAlreadyExists, got {other:?}"),
    }

    // An unknown machine is the server's 404, reported as an error with exit code 1.
    let (r, _) = cli(&["appfence", "machines", "get", "no-such-host"], &env).await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::FAILURE);
    assert!(e.to_string().starts_with("ResourceNotFound: "), "{e}");

    // app create works on the data dir while the server runs; the new app can read
    // but not restrict.
    let data_str = data.to_str().unwrap();
    let argv = [
        "appfence",
        "-o",
        "json",
        "app",
        "create",
        "--name",
        "reader",
        "--role",
        "Machine.Read.All",
        "--data-dir",
        data_str,
    ];
    let (r, out) = cli(&argv, &Env::default()).await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    let app: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(app["tenantId"], demo.tenant_id.as_str());
    assert_eq!(app["roles"], serde_json::json!(["Machine.Read.All"]));
    let reader = Env::from_pairs([
        ("APPFENCE_SERVER", serving.base_url()),
        ("APPFENCE_TENANT", demo.tenant_id.clone()),
        (
            "APPFENCE_CLIENT_ID",
            app["clientId"].as_str().unwrap().to_string(),
        ),
        (
            "APPFENCE_CLIENT_SECRET",
            app["clientSecret"].as_str().unwrap().to_string(),
        ),
    ]);
    let (r, _) = cli(&["appfence", "machines", "get", machine], &reader).await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    let (r, _) = cli(
        &["appfence", "restrict", &demo.machines[1], "--comment", "x"],
        &reader,
    )
    .await;
    assert_eq!(
        r.unwrap_err().to_string().split(':').next(),
        Some("Forbidden")
    );

    serving.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_create_refuses_unknown_roles_and_tenants() {
    let dir = private_tempdir();
    let data = dir.path().to_str().unwrap();
    let (r, out) = cli(
        &[
            "appfence",
            "app",
            "create",
            "--name",
            "x",
            "--role",
            "Machine.Everything",
            "--data-dir",
            data,
        ],
        &Env::default(),
    )
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::from(2));
    assert!(e.to_string().contains("Machine.Everything"), "{e}");
    assert!(out.is_empty());

    let (r, _) = cli(
        &[
            "appfence",
            "app",
            "create",
            "--name",
            "x",
            "--role",
            "Machine.Read.All",
            "--tenant",
            "nope",
            "--data-dir",
            data,
        ],
        &Env::default(),
    )
    .await;
    assert!(r.unwrap_err().to_string().contains("no tenant \"nope\""));

    let (r, out) = cli(
        &[
            "appfence",
            "app",
            "create",
            "--name",
            "soar",
            "--role",
            "Machine.RestrictExecution",
            "--data-dir",
            data,
        ],
        &Env::default(),
    )
    .await;
    assert_eq!(r.unwrap(), ExitCode::SUCCESS);
    assert!(out.contains("client secret  "), "{out}");
    assert!(out.contains("cannot be shown again"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_the_start_cleanly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = private_tempdir();
    let mut s = settings(dir.path(), false);
    s.server.listen = taken.local_addr().unwrap();
    let e = serve::start(s).await.err().expect("the port is taken");
    assert!(e.to_string().contains("cannot listen on"), "{e}");
}

#[tokio::test]
async fn client_commands_without_credentials_say_what_to_set() {
    let (r, _) = cli(&["appfence", "actions", "list"], &Env::default()).await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::from(2));
    assert!(e.to_string().contains("APPFENCE_TENANT"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::from_pairs([
        ("APPFENCE_SERVER", format!("http://127.0.0.1:{port}")),
        ("APPFENCE_TENANT", "t".into()),
        ("APPFENCE_CLIENT_ID", "c".into()),
        ("APPFENCE_CLIENT_SECRET", "s".into()),
    ]);
    let (r, _) = cli(&["appfence", "machines", "list"], &env).await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            CliError::Client(appfence_client::ClientError::Transport(_))
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), ExitCode::FAILURE);
}

fn user_create(argv: &[&str]) -> Result<crate::args::UserCreateArgs, clap::Error> {
    let mut full = vec!["appfence", "user", "create"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full)?.command {
        crate::args::Command::User(crate::args::UserCommand::Create(a)) => Ok(a),
        other => panic!("not user create: {other:?}"),
    }
}

#[test]
fn user_create_takes_groups_repeated_or_comma_separated() {
    let a = user_create(&[
        "--upn",
        "ana@example.com",
        "--password-stdin",
        "--group",
        "tier2,servers",
        "--group",
        "oncall",
        "--tenant",
        "default",
        "--data-dir",
        "/tmp/d",
        "--config",
        "/etc/appfence.toml",
    ])
    .unwrap();
    assert_eq!(a.upn, "ana@example.com");
    assert!(a.password_stdin);
    assert_eq!(a.groups, ["tier2", "servers", "oncall"]);
    assert_eq!(a.offline.tenant.as_deref(), Some("default"));
    assert_eq!(a.offline.data_dir, Some(std::path::PathBuf::from("/tmp/d")));
    assert_eq!(
        a.offline.config,
        Some(std::path::PathBuf::from("/etc/appfence.toml"))
    );
    let a = user_create(&[
        "--upn",
        "bo@example.com",
        "--password-stdin",
        "--group",
        "g",
    ])
    .unwrap();
    let o = a.offline;
    assert_eq!((o.tenant, o.data_dir, o.config), (None, None, None));
}

#[test]
fn user_create_needs_a_upn_a_group_and_the_password_on_stdin() {
    for argv in [
        &["--password-stdin", "--group", "g"][..],
        &["--upn", "ana@example.com", "--group", "g"],
        &["--upn", "ana@example.com", "--password-stdin"],
        // There is no way to give the password as an argument.
        &[
            "--upn",
            "ana@example.com",
            "--password-stdin",
            "--group",
            "g",
            "--password",
            "correct horse battery",
        ],
        &[
            "--upn",
            "ana@example.com",
            "--password-stdin=correct-horse-battery",
            "--group",
            "g",
        ],
    ] {
        let e = user_create(argv).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{argv:?}");
    }
}

/// A temporary directory only its owner can enter, as appfence requires of a data
/// directory (tempfile's default follows the umask).
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("temp dir")
}
