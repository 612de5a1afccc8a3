//! `appfence login` and `appfence logout` as a person uses them, against `serve --demo`
//! over real HTTP: the device code approved (or denied) by the demo analyst in the
//! console, the browser flow driven through the console's sign-in to the CLI's loopback
//! listener, the token cache's permissions, API commands with no secret in the
//! environment, refresh (also by several processes at once), logout, and a disabled
//! user's sign-in ending at the next refresh.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::console::Browser;
use crate::demo::{read_demo, token};
use crate::harness::{http_client, private_tempdir, within};
use crate::process::{command, free_port, run, start_serve, ChildGuard, CliRun};
use crate::wire::Resp;

const LIMIT: Duration = Duration::from_secs(60);

/// A `serve --demo` with one simulated device, and a home directory of its own for the
/// CLI (so the person's real token cache is never touched).
struct Demo {
    _server: ChildGuard,
    _logs: TempDir,
    data: TempDir,
    home: TempDir,
    base: String,
    demo: Value,
}

async fn start_demo() -> Demo {
    let data = private_tempdir();
    let logs = private_tempdir();
    let port = free_port();
    let d = data.path().to_path_buf();
    let l = logs.path().to_path_buf();
    let server = tokio::task::spawn_blocking(move || {
        let listen = format!("127.0.0.1:{port}");
        start_serve(
            &[
                "--demo",
                "--demo-devices",
                "1",
                "--listen",
                &listen,
                "--data-dir",
                d.to_str().unwrap(),
            ],
            &[],
            &l,
            "serve",
            Duration::from_secs(90),
        )
    })
    .await
    .unwrap();
    let demo = read_demo(data.path());
    Demo {
        _server: server,
        _logs: logs,
        data,
        home: private_tempdir(),
        base: format!("http://127.0.0.1:{port}"),
        demo,
    }
}

impl Demo {
    fn tenant(&self) -> &str {
        self.demo["tenantId"].as_str().unwrap()
    }

    fn analyst(&self) -> (&str, &str) {
        (
            self.demo["analyst"]["username"].as_str().unwrap(),
            self.demo["analyst"]["password"].as_str().unwrap(),
        )
    }

    fn machine(&self) -> &str {
        self.demo["machines"][0].as_str().unwrap()
    }

    fn config_home(&self) -> PathBuf {
        self.home.path().join("config")
    }

    fn cache_path(&self) -> PathBuf {
        self.config_home().join("appfence/tokens.json")
    }

    /// The person's environment: a home of their own, the server and tenant, and no
    /// application credentials at all.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOME", self.home.path().display().to_string()),
            ("XDG_CONFIG_HOME", self.config_home().display().to_string()),
            ("APPFENCE_SERVER", self.base.clone()),
            ("APPFENCE_TENANT", self.tenant().to_string()),
        ]
    }

    async fn cli(&self, args: &[&str]) -> CliRun {
        let env = self.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(args, &pairs, LIMIT).await
    }

    /// `appfence login ARGS`, running in the background.
    fn spawn_login(&self, args: &[&str], name: &str) -> ChildGuard {
        let mut all = vec!["login"];
        all.extend_from_slice(args);
        let mut cmd = command(&all, &[]);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        ChildGuard::spawn(cmd, self.home.path(), name)
    }

    fn cache(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.cache_path()).unwrap()).unwrap()
    }

    fn session(&self) -> Value {
        let cache = self.cache();
        let sessions = cache["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1, "{}", redacted(&cache));
        sessions[0].clone()
    }

    /// Makes the cached access token look expired, as it will be in an hour.
    fn expire_access_token(&self) {
        let mut cache = self.cache();
        cache["sessions"][0]["expiresAt"] = 0.into();
        // Rewritten in place: the file keeps its mode.
        std::fs::write(self.cache_path(), cache.to_string()).unwrap();
    }

    /// A console session of the demo analyst.
    async fn analyst_browser(&self) -> Browser {
        let mut b = Browser::new(&self.base);
        let (user, password) = self.analyst();
        let r = b.sign_in(user, password).await;
        assert_eq!(r.status, 303, "{}", r.body);
        b
    }

    /// Decides on a device sign-in in the console, as the analyst.
    async fn decide_device_code(&self, user_code: &str, decision: &str) {
        let r = self
            .analyst_browser()
            .await
            .decide_device_code(user_code, decision)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn redacted(cache: &Value) -> String {
    let mut c = cache.clone();
    if let Some(sessions) = c["sessions"].as_array_mut() {
        for s in sessions {
            s["accessToken"] = "…".into();
            s["refreshToken"] = "…".into();
        }
    }
    c.to_string()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Waits (bounded) for the child's standard error to contain what `find` looks for.
async fn wait_for_stderr<T>(
    child: &mut ChildGuard,
    what: &str,
    find: impl Fn(&str) -> Option<T>,
) -> T {
    within(LIMIT, what, async {
        loop {
            if let Some(found) = find(&child.stderr_text()) {
                return found;
            }
            if let Some(status) = child.exited() {
                panic!(
                    "login exited with {status} before printing {what}\nstderr:\n{}",
                    child.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The lines written in full so far (the child may be in the middle of one).
fn whole_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(str::trim)
}

/// The user code in the device sign-in's instructions: `XXXX-XXXX`.
fn user_code(text: &str) -> Option<String> {
    whole_lines(text)
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')))
        .find(|w| {
            w.len() == 9
                && w.as_bytes()[4] == b'-'
                && w.bytes()
                    .enumerate()
                    .all(|(i, b)| i == 4 || b.is_ascii_uppercase())
        })
        .map(str::to_string)
}

/// The authorize URL `login --no-browser` prints.
fn authorize_url(text: &str) -> Option<String> {
    whole_lines(text)
        .find(|l| l.starts_with("http") && l.contains("/oauth2/v2.0/authorize?"))
        .map(str::to_string)
}

/// Waits (bounded) for the child to exit.
async fn finish(mut child: ChildGuard) -> (ExitStatus, String, String) {
    tokio::task::spawn_blocking(move || {
        let status = child.wait(LIMIT);
        (status, child.stdout_text(), child.stderr_text())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_login_then_commands_refresh_and_logout() {
    let d = start_demo().await;
    let (analyst, _) = d.analyst();

    // Signed in with a code approved in the console.
    let mut login = d.spawn_login(&["--device-code"], "login-device");
    let code = wait_for_stderr(&mut login, "the user code", user_code).await;
    assert!(
        login
            .stderr_text()
            .contains(&format!("{}/console/device", d.base)),
        "{}",
        login.stderr_text()
    );
    d.decide_device_code(&code, "approve").await;
    let (status, stdout, stderr) = finish(login).await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "Signed in as {analyst} to {} (tenant {})",
            d.base,
            d.tenant()
        )
    );

    // The cache: 0600 in a 0700 directory; the tokens of the analyst.
    assert_eq!(mode(&d.cache_path()), 0o600);
    assert_eq!(mode(d.cache_path().parent().unwrap()), 0o700);
    let first = d.session();
    assert_eq!(first["user"], analyst);
    assert_eq!(first["server"], d.base.as_str());
    assert!(first["refreshToken"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    // An action with no secret anywhere: the analyst is its requestor.
    let r = d
        .cli(&[
            "-o",
            "json",
            "restrict",
            d.machine(),
            "--comment",
            "signed in with a device code",
        ])
        .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_string();
    let http = http_client();
    let app_token = token(&http, &d.demo).await;
    let seen = Resp::read(
        http.get(format!("{}/api/machineactions/{id}", d.base))
            .bearer_auth(&app_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert_eq!(seen.json()["requestor"], analyst);
    assert_eq!(
        seen.json()["requestorComment"],
        "signed in with a device code"
    );

    // An expired access token is refreshed; the rotated refresh token is kept.
    d.expire_access_token();
    let r = d.cli(&["-o", "json", "actions", "get", &id]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let second = d.session();
    assert_ne!(second["refreshToken"], first["refreshToken"]);
    assert_ne!(second["accessToken"], first["accessToken"]);
    assert!(second["expiresAt"].as_u64().unwrap() > 0);
    assert_eq!(mode(&d.cache_path()), 0o600);

    // Several processes needing a refresh at once present the refresh token once: a
    // second use would make the server revoke the sign-in.
    d.expire_access_token();
    let runs =
        futures::future::join_all((0..3).map(|_| d.cli(&["-o", "json", "machines", "list"]))).await;
    for r in &runs {
        assert_eq!(r.code, Some(0), "{r:?}");
    }
    let third = d.session();
    assert_ne!(third["refreshToken"], second["refreshToken"]);
    d.expire_access_token();
    let r = d.cli(&["machines", "list"]).await;
    assert_eq!(r.code, Some(0), "the sign-in survived: {r:?}");

    // Signed out: the next command says how to sign in.
    let r = d.cli(&["logout"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("Signed out {analyst} from {}", d.base)),
        "{r:?}"
    );
    assert_eq!(d.cache()["sessions"], serde_json::json!([]));
    let r = d.cli(&["logout"]).await;
    assert!(r.stdout.contains("Nothing was signed in"), "{r:?}");
    let r = d.cli(&["machines", "list"]).await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("appfence login"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_state_denial_and_a_disabled_user() {
    let d = start_demo().await;
    let (analyst, password) = d.analyst();

    // The browser flow, with the URL printed instead of a browser opened.
    let mut login = d.spawn_login(&["--no-browser"], "login-browser");
    let url = wait_for_stderr(&mut login, "the authorize URL", authorize_url).await;
    let redirect_uri = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(
        redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"),
        "{redirect_uri}"
    );
    let loopback = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Something else on this machine answers first, with a state of its own: refused,
    // and the sign-in goes on.
    let forged = Resp::read(
        loopback
            .get(format!("{redirect_uri}?code=forged&state=guessed"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(forged.status, 400, "{}", forged.text);
    assert!(forged.text.contains("state differs"), "{}", forged.text);

    // The browser: authorize, the console's sign-in, back to authorize, then the CLI.
    let path = url
        .strip_prefix(&d.base)
        .expect("the authorize URL is the server's");
    let mut b = Browser::new(&d.base);
    let r = b.get(path).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let sign_in = r.location().to_string();
    assert!(sign_in.starts_with("/console/sign-in?next="), "{sign_in}");
    let r = b.sign_in_at(&sign_in, analyst, password).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The sign-in goes on to the authorize request it interrupted.
    assert_eq!(r.next_location(), path);
    let r = b.get(path).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let back = r.location().to_string();
    assert!(back.starts_with(&format!("{redirect_uri}?code=")), "{back}");
    let page = Resp::read(loopback.get(&back).send().await.unwrap()).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("close this tab"), "{}", page.text);
    let (status, stdout, stderr) = finish(login).await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "Signed in as {analyst} to {} (tenant {})",
            d.base,
            d.tenant()
        )
    );
    assert_eq!(d.session()["user"], analyst);
    assert_eq!(mode(&d.cache_path()), 0o600);
    let r = d.cli(&["machines", "list"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");

    // A device sign-in denied in the console fails with the server's access_denied.
    let mut denied = d.spawn_login(&["--device-code"], "login-denied");
    let code = wait_for_stderr(&mut denied, "the user code", user_code).await;
    d.decide_device_code(&code, "deny").await;
    let (status, stdout, stderr) = finish(denied).await;
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr
            .contains("the sign-in was denied: access_denied: The user denied the sign-in request"),
        "{stderr}"
    );
    assert_eq!(d.session()["user"], analyst, "the sign-in before stays");

    // The analyst is disabled (offline, on the running server's data directory): the
    // next refresh is refused, and the sign-in ends with the server's reason.
    let data = d.data.path().display().to_string();
    let r = run(
        &[
            "user",
            "disable",
            analyst,
            "--tenant",
            d.tenant(),
            "--data-dir",
            &data,
        ],
        &[],
        LIMIT,
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    d.expire_access_token();
    let r = d.cli(&["machines", "list"]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("your sign-in has ended: run `appfence login` again"),
        "{r:?}"
    );
    assert!(r.stderr.contains("disabled"), "{r:?}");
    assert_eq!(d.cache()["sessions"], serde_json::json!([]));
}
