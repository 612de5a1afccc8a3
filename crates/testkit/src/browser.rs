//! Headless Chromium for the tests, from Debian's `chromium` and `chromium-driver`
//! packages, driven over WebDriver with [`fantoccini`].
//!
//! Each [`Browser`] is a chromedriver of its own on a free loopback port, started in a
//! process group of its own, and one headless Chromium session through it, with a private
//! profile (and `HOME`) in a temporary directory. Dropping the browser, also while a
//! panicking test unwinds, kills the whole group (chromedriver and every Chromium
//! process) and removes the directory; a test process that was killed outright leaves
//! them to the next start, which kills what is left of them and removes their
//! directories.
//!
//! Chromium reaches nothing but loopback addresses: every other host name resolves to
//! nothing and any other request goes to a dead loopback proxy, and its background
//! services (updates, sync, metrics) are off.
//!
//! Where Chromium or chromedriver is not installed, [`browser_or_skip`] prints
//! `skipped: <test>: <why>` and the test returns; with `CI=true` it fails instead.
//! `APPFENCE_CHROMIUM` and `APPFENCE_CHROMEDRIVER` name other binaries than the
//! `chromium` and `chromedriver` found on `PATH`.
//!
//! Every WebDriver call has a deadline, and every helper that waits for the page polls
//! it every 100 ms up to a limit (20 s unless given): nothing hangs, and a wait that
//! runs out fails the test with a screenshot of the page.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use fantoccini;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long the waiting helpers wait unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);
/// The limit of a single WebDriver command (a page load included).
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// chromedriver listening and Chromium's session created, on a busy two-core machine.
const START_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const DIR_PREFIX: &str = "appfence-browser-";
/// The window (and so screenshot) size.
pub const WINDOW: (u32, u32) = (1366, 900);

/// A headless Chromium session and the chromedriver serving it; both end when this is
/// dropped.
pub struct Browser {
    client: Client,
    driver: Child,
    /// The private directory: Chromium's profile, `HOME`, the driver's log.
    dir: PathBuf,
    test: String,
    failures: AtomicU32,
}

/// The Chromium and chromedriver binaries to use.
struct Binaries {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// A [`Browser`] for `test`, or `None` after printing `skipped: {test}: {why}` when
/// Chromium or chromedriver is not installed; under `CI=true` a missing browser fails
/// the test instead. A browser that is installed but does not start always fails it.
///
/// Call it from the test's own task (not from `spawn_blocking`): the driver is killed
/// when the thread that started it ends (`PR_SET_PDEATHSIG`), so that it dies with a
/// test process that is killed.
pub async fn browser_or_skip(test: &str) -> Option<Browser> {
    let bins = match binaries() {
        Ok(b) => b,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: headless Chromium is required under CI=true: {why}")
        }
        Err(why) => {
            println!("skipped: {test}: {why}");
            return None;
        }
    };
    match Browser::start_with(test, &bins).await {
        Ok(b) => Some(b),
        Err(why) => panic!("{test}: headless Chromium did not start: {why}"),
    }
}

/// The binaries, or why they cannot be had.
fn binaries() -> Result<Binaries, String> {
    let find = |var: &str, name: &str, package: &str| -> Result<PathBuf, String> {
        match std::env::var_os(var) {
            Some(p) => {
                let p = PathBuf::from(p);
                if is_executable(&p) {
                    Ok(p)
                } else {
                    Err(format!("{var}={} is not an executable file", p.display()))
                }
            }
            None => on_path(name).ok_or_else(|| {
                format!(
                    "`{name}` is not on PATH (Debian's package is `{package}`, which \
                     scripts/test installs; or set {var})"
                )
            }),
        }
    };
    Ok(Binaries {
        chromium: find("APPFENCE_CHROMIUM", "chromium", "chromium")?,
        chromedriver: find("APPFENCE_CHROMEDRIVER", "chromedriver", "chromium-driver")?,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether Chromium and chromedriver are installed (found as [`browser_or_skip`] looks).
pub fn browser_available() -> bool {
    binaries().is_ok()
}

/// The directory screenshots go to: `browser-screenshots` in `CARGO_TARGET_DIR` if set,
/// else in the workspace's `target`.
pub fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => workspace.join(t),
        None => workspace.join("target"),
    };
    let dir = target.join("browser-screenshots");
    std::fs::canonicalize(&target)
        .map(|t| t.join("browser-screenshots"))
        .unwrap_or(dir)
}

/// `name` made safe as a file name.
fn file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "screenshot".into()
    } else {
        s
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Kills every process (ours excepted) whose command line names a path under `dir`:
/// the Chromium processes of a profile, including those outside the driver's process
/// group (the crash handler starts a session of its own).
fn kill_processes_using(dir: &Path) {
    // With the slash, `...-1/` is not a prefix of another browser's `...-10/`.
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            // SAFETY: sending a signal.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Kills what is left of the browsers of test processes that are gone, and removes
/// their directories.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // <prefix><pid>-<n>
        let pid = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_processes_using(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The last lines of the driver's log, for error messages.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Chromium's command line: headless, as root (no sandbox), no GPU, shared memory in
/// /tmp, a private profile, and no network but loopback.
fn chromium_args(profile: &Path) -> Vec<String> {
    vec![
        "--headless=new".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-default-apps".into(),
        "--disable-extensions".into(),
        "--disable-domain-reliability".into(),
        "--disable-client-side-phishing-detection".into(),
        "--disable-breakpad".into(),
        "--metrics-recording-only".into(),
        "--no-pings".into(),
        "--password-store=basic".into(),
        "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,\
         AutofillServerCommunication,CertificateTransparencyComponentUpdater"
            .into(),
        // Loopback only: other names resolve to nothing (the rules apply to address
        // literals too, hence the loopback ones excluded), other addresses go to a proxy
        // that is not there (loopback bypasses proxies).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, \
         EXCLUDE [::1]"
            .into(),
        "--proxy-server=http://127.0.0.1:9".into(),
    ]
}

/// Runs one WebDriver call with a deadline.
async fn limited<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_LIMIT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {COMMAND_LIMIT:?}")),
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or says why it could not.
    pub async fn start(test: &str) -> Result<Browser, String> {
        Self::start_with(test, &binaries()?).await
    }

    async fn start_with(test: &str, bins: &Binaries) -> Result<Browser, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let started = Instant::now();
        let mut last = String::new();
        // A port taken between choosing it and chromedriver binding it: another one.
        for _ in 0..3 {
            let (driver, port) = match spawn_driver(bins, &dir) {
                Ok(v) => v,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            };
            // From here the guard ends the driver (and the directory) on every error.
            let guard = DriverGuard {
                driver: Some(driver),
                dir: Some(dir.clone()),
            };
            match connect(bins, &dir, port, guard).await {
                Ok((client, mut guard)) => {
                    let browser = Browser {
                        client,
                        driver: guard.driver.take().expect("driver"),
                        dir: guard.dir.take().expect("dir"),
                        test: test.to_string(),
                        failures: AtomicU32::new(0),
                    };
                    eprintln!(
                        "{test}: headless Chromium started in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(browser);
                }
                Err((why, retry)) => {
                    last = why;
                    if !retry {
                        break;
                    }
                    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The test this browser was started for.
    pub fn test(&self) -> &str {
        &self.test
    }

    /// Fails the test with `why`, the page's URL and a screenshot of it.
    async fn fail(&self, why: String) -> ! {
        let n = self.failures.fetch_add(1, Ordering::SeqCst);
        let url = limited("current URL", self.client.current_url())
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| e);
        let shot = self
            .try_screenshot(&format!("{}-failure-{n}", self.test))
            .await
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("(no screenshot: {e})"));
        panic!("{}: {why}\n  at {url}\n  screenshot: {shot}", self.test)
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        if let Err(e) = limited(&format!("open {url}"), self.client.goto(url)).await {
            self.fail(e).await
        }
    }

    /// The page's URL.
    pub async fn current_url(&self) -> String {
        match limited("current URL", self.client.current_url()).await {
            Ok(u) => u.to_string(),
            Err(e) => self.fail(e).await,
        }
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        match limited("title", self.client.title()).await {
            Ok(t) => t,
            Err(e) => self.fail(e).await,
        }
    }

    /// The page's source (the DOM as it is now, serialized).
    pub async fn source(&self) -> String {
        match limited("page source", self.client.source()).await {
            Ok(s) => s,
            Err(e) => self.fail(e).await,
        }
    }

    /// The rendered text of the whole page (`body`).
    pub async fn body_text(&self) -> String {
        self.text_of("body").await
    }

    /// The first element matching the CSS selector, waiting for it up to
    /// [`DEFAULT_WAIT`].
    pub async fn find(&self, css: &str) -> Element {
        self.find_within(css, DEFAULT_WAIT).await
    }

    /// The first element matching the CSS selector, waiting for it up to `limit`.
    pub async fn find_within(&self, css: &str, limit: Duration) -> Element {
        let deadline = Instant::now() + limit;
        loop {
            let last = match limited(css, self.client.find(Locator::Css(css))).await {
                Ok(e) => return e,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.fail(format!("no element {css:?} within {limit:?}: {last}"))
                    .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every element matching the CSS selector now (no waiting; maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        match limited(css, self.client.find_all(Locator::Css(css))).await {
            Ok(v) => v,
            Err(e) => self.fail(e).await,
        }
    }

    /// Whether an element matches the CSS selector now (no waiting).
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// The rendered text of the first element matching the CSS selector, waiting for
    /// the element up to [`DEFAULT_WAIT`].
    pub async fn text_of(&self, css: &str) -> String {
        let deadline = Instant::now() + DEFAULT_WAIT;
        loop {
            // The element may be replaced between finding and reading it.
            let last = match self.text_now(css).await {
                Ok(Some(t)) => return t,
                Ok(None) => format!("no element {css:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.fail(format!(
                    "no text of {css:?} within {DEFAULT_WAIT:?}: {last}"
                ))
                .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of the first element matching `css` now, `None` if there is none.
    async fn text_now(&self, css: &str) -> Result<Option<String>, String> {
        let found = limited(css, self.client.find_all(Locator::Css(css))).await?;
        match found.first() {
            Some(e) => limited(css, e.text()).await.map(Some),
            None => Ok(None),
        }
    }

    /// Waits up to `limit` until the first element matching `css` exists and its text
    /// satisfies `ready`, polling every 100 ms; returns that text. Fails the test,
    /// with the last text seen, when the limit passes.
    pub async fn wait_for(
        &self,
        css: &str,
        ready: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.text_now(css).await {
                Ok(Some(t)) if ready(&t) => return t,
                Ok(Some(t)) => format!("its text is {t:?}"),
                Ok(None) => "there is no such element".to_string(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.fail(format!(
                    "{css:?} was not as awaited within {limit:?}: {last}"
                ))
                .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to [`DEFAULT_WAIT`] until the text of `css` contains `needle`.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        self.wait_for(css, |t| t.contains(needle), DEFAULT_WAIT)
            .await
    }

    /// Waits up to `limit` until no element matches `css`.
    pub async fn wait_gone(&self, css: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.exists(css).await {
            if Instant::now() >= deadline {
                self.fail(format!("{css:?} still there after {limit:?}"))
                    .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `limit` until the page's URL satisfies `ready`; returns it.
    pub async fn wait_for_url(&self, ready: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let url = self.current_url().await;
            if ready(&url) {
                return url;
            }
            if Instant::now() >= deadline {
                self.fail(format!("the URL was not as awaited within {limit:?}"))
                    .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Retries `act` on the first element matching `css` until it succeeds (the element
    /// may not exist, be shown or be enabled yet), up to [`DEFAULT_WAIT`].
    async fn on_element<F, Fut>(&self, what: &str, css: &str, act: F)
    where
        F: Fn(Element) -> Fut,
        Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
    {
        let deadline = Instant::now() + DEFAULT_WAIT;
        loop {
            let last = match limited(css, self.client.find(Locator::Css(css))).await {
                Ok(e) => match limited(what, act(e)).await {
                    Ok(()) => return,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.fail(format!(
                    "cannot {what} {css:?} within {DEFAULT_WAIT:?}: {last}"
                ))
                .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the first element matching `css` (waiting until it can be clicked).
    pub async fn click(&self, css: &str) {
        self.on_element("click", css, |e| async move { e.click().await })
            .await
    }

    /// Replaces the value of the input matching `css` with `text` (typed as keys).
    pub async fn fill(&self, css: &str, text: &str) {
        self.on_element("fill", css, |e| async move {
            e.clear().await?;
            e.send_keys(text).await
        })
        .await
    }

    /// Chooses the option of the `<select>` matching `css` whose value is `value`.
    pub async fn select(&self, css: &str, value: &str) {
        self.on_element("select in", css, |e| async move {
            e.select_by_value(value).await
        })
        .await
    }

    /// The attribute `name` of the first element matching `css` (waiting for it).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css).await;
        match limited(name, e.attr(name)).await {
            Ok(v) => v,
            Err(e) => self.fail(e).await,
        }
    }

    /// Runs `script` (a function body: `return ...;`, `arguments[i]` are `args`) in the
    /// page; its JSON result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        match limited("script", self.client.execute(script, args)).await {
            Ok(v) => v,
            Err(e) => self.fail(e).await,
        }
    }

    /// The page's cookies as (name, value) pairs.
    pub async fn cookies(&self) -> Vec<(String, String)> {
        match limited("cookies", self.client.get_all_cookies()).await {
            Ok(v) => v
                .iter()
                .map(|c| (c.name().to_string(), c.value().to_string()))
                .collect(),
            Err(e) => self.fail(e).await,
        }
    }

    /// The value of the page's cookie `name`, if set.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .await
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Saves a PNG screenshot of the window as `<target>/browser-screenshots/<name>.png`
    /// (see [`screenshot_dir`]); its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        match self.try_screenshot(name).await {
            Ok(p) => p,
            Err(e) => panic!("{}: screenshot {name:?}: {e}", self.test),
        }
    }

    async fn try_screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let png = limited("screenshot", self.client.screenshot()).await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{}.png", file_name(name)));
        std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// Ends the session (WebDriver's delete session, which closes Chromium) and then
    /// the driver. Dropping the browser ends both as well, only less politely.
    pub async fn quit(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        end_driver(&mut self.driver, &self.dir);
    }
}

/// Owns the driver while a session is being created: ends it on every way out.
struct DriverGuard {
    driver: Option<Child>,
    dir: Option<PathBuf>,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let (Some(mut driver), Some(dir)) = (self.driver.take(), self.dir.take()) {
            end_driver(&mut driver, &dir);
        }
    }
}

/// SIGKILL to the driver's process group (the driver and Chromium), then to any
/// process still naming the profile; waits for the driver and removes the directory.
fn end_driver(driver: &mut Child, dir: &Path) {
    // SAFETY: the driver leads its own process group (process_group(0)).
    unsafe {
        libc::kill(-(driver.id() as i32), libc::SIGKILL);
    }
    let _ = driver.kill();
    let _ = driver.wait();
    kill_processes_using(dir);
    // Chromium's processes may still be exiting (and writing their profile).
    for _ in 0..20 {
        if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts chromedriver on a free loopback port in a process group of its own, its
/// output in `dir/chromedriver.log`.
fn spawn_driver(bins: &Binaries, dir: &Path) -> Result<(Child, u16), String> {
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("chromedriver.log"))
        .map_err(|e| format!("cannot create the driver's log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let home = dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&bins.chromedriver);
    cmd.arg(format!("--port={port}"))
        // Chromium and its crash handler write under HOME and XDG dirs: the private dir,
        // which also names them for the clean-up.
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .process_group(0);
    // SAFETY: prctl is async-signal-safe. The driver dies with the test process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bins.chromedriver.display()))?;
    Ok((child, port))
}

/// Waits for the driver to listen, then creates the session. On error, whether another
/// port is worth a try (the driver exited before listening).
async fn connect(
    bins: &Binaries,
    dir: &Path,
    port: u16,
    mut guard: DriverGuard,
) -> Result<(Client, DriverGuard), (String, bool)> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        let driver = guard.driver.as_mut().expect("driver");
        if let Ok(Some(status)) = driver.try_wait() {
            return Err((
                format!("chromedriver exited with {status}: {}", log_tail(dir)),
                true,
            ));
        }
        if Instant::now() >= deadline {
            return Err((
                format!(
                    "chromedriver did not listen on 127.0.0.1:{port} within {START_LIMIT:?}: {}",
                    log_tail(dir)
                ),
                false,
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let profile = dir.join("profile");
    let caps = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "timeouts": {
            "implicit": 0,
            "pageLoad": COMMAND_LIMIT.as_millis() as u64,
            "script": COMMAND_LIMIT.as_millis() as u64,
        },
        "goog:chromeOptions": {
            "binary": bins.chromium,
            "args": chromium_args(&profile),
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut builder = ClientBuilder::new(connector);
    builder.capabilities(caps);
    let url = format!("http://127.0.0.1:{port}");
    let session = tokio::time::timeout(START_LIMIT, builder.connect(&url)).await;
    match session {
        Ok(Ok(client)) => Ok((client, guard)),
        Ok(Err(e)) => Err((
            format!("no WebDriver session: {e}\n{}", log_tail(dir)),
            false,
        )),
        Err(_) => Err((
            format!(
                "no WebDriver session within {START_LIMIT:?}\n{}",
                log_tail(dir)
            ),
            false,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screenshot_names_are_file_names() {
        assert_eq!(file_name("console/sign in"), "console_sign_in");
        assert_eq!(file_name("../x"), "_x");
        assert_eq!(file_name(""), "screenshot");
        assert_eq!(file_name("a-b_c.1"), "a-b_c.1");
    }

    #[test]
    fn screenshots_go_under_a_target_dir() {
        assert!(screenshot_dir().ends_with("browser-screenshots"));
    }

    /// Serves one HTTP response with `body` on a loopback port; its URL.
    fn serve_once(body: &'static str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/page", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            // Chromium may open a spare connection first; answer each until the page.
            for stream in listener.incoming().take(4) {
                let Ok(mut stream) = stream else { return };
                stream.set_read_timeout(Some(COMMAND_LIMIT)).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut request = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    request.push_str(&line);
                    line.clear();
                }
                if request.is_empty() {
                    continue;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                if request.starts_with("GET /page ") {
                    return;
                }
            }
        });
        url
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_browser_reaches_loopback_and_nothing_else() {
        let Some(browser) = browser_or_skip("testkit_browser_network").await else {
            return;
        };
        let url = serve_once("<title>loop</title><p id=x>from loopback</p>");
        browser.goto(&url).await;
        assert_eq!(browser.text_of("#x").await, "from loopback");
        assert_eq!(browser.current_url().await, url);
        // Another name is never looked up or fetched.
        let far = limited("open", browser.client().goto("http://appfence.invalid/")).await;
        assert!(far.is_err(), "{far:?}");
        browser.quit().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_browser_renders_a_page_and_ends_with_its_processes() {
        let Some(browser) = browser_or_skip("testkit_browser").await else {
            return;
        };
        let dir = browser.dir.clone();
        browser
            .goto("data:text/html,<title>t</title><p id=x>hello</p><input id=i>")
            .await;
        assert_eq!(browser.title().await, "t");
        assert_eq!(browser.text_of("#x").await, "hello");
        browser.fill("#i", "typed").await;
        assert_eq!(
            browser
                .execute("return document.getElementById('i').value;", vec![])
                .await,
            json!("typed")
        );
        let shot = browser.screenshot("testkit_browser").await;
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{}", shot.display());
        let group = browser.driver.id();
        drop(browser);
        assert_ended(&dir, group);
    }

    /// The browser's directory is gone and no process of it runs: none names the
    /// directory, none is in the driver's process group (zombies waiting for init to
    /// reap them do not run).
    fn assert_ended(dir: &Path, group: u32) {
        assert!(!dir.exists(), "{} removed", dir.display());
        let needle = format!("{}/", dir.display());
        // Killed processes take a moment to go.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|stat| {
                    // pid (comm) state ppid pgrp ...
                    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
                    let fields: Vec<&str> = rest.split(' ').collect();
                    fields.first().is_some_and(|s| *s != "Z")
                        && fields.get(2) == Some(&group.to_string().as_str())
                })
                .chain(
                    std::fs::read_dir("/proc")
                        .unwrap()
                        .flatten()
                        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .filter(|c| c.contains(&needle)),
                )
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left running: {left:?}");
            std::thread::sleep(POLL);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_test_that_panics_leaves_nothing_running() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let test = tokio::spawn(async move {
            let Some(browser) = browser_or_skip("testkit_browser_panic").await else {
                return;
            };
            browser.goto("data:text/html,<p>about to fail</p>").await;
            let _ = tx.send((browser.dir.clone(), browser.driver.id()));
            panic!("a failing browser test");
        });
        let outcome = test.await;
        let Ok((dir, group)) = rx.await else {
            return; // skipped
        };
        assert!(outcome.unwrap_err().is_panic());
        assert_ended(&dir, group);
    }
}
