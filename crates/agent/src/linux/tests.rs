//! Enforcement, for real. Each scenario re-runs this test binary as a child inside a new
//! mount and PID namespace (`unshare -m -p -f --mount-proc --propagation private`),
//! under `timeout -s KILL 60`. The child mounts a private tmpfs, marks only that, runs
//! programs from it, and exits (which closes every fanotify group it held). The
//! `vm.memfd_noexec` sysctl is per PID namespace, so the real one is used safely.
//!
//! Without root the scenarios print "skipped: ..." and pass (unless
//! `APPFENCE_REQUIRE_FANOTIFY=1`). As root (CI runs as root) a missing fanotify,
//! `unshare` or namespace support is a failure, so enforcement is never silently
//! untested; `APPFENCE_SKIP_FANOTIFY=1` skips explicitly.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use appfence_core::ManualClock;
use appfence_proto::agent::RuleOutcome;
use appfence_proto::Timestamp;
use sha2::Digest;

use super::*;
use crate::enforcer::Enforcer;

/// Set in the namespace child: run the scenario instead of spawning.
const CHILD_ENV: &str = "APPFENCE_FANOTIFY_CHILD";
/// Set (to a mount path) in the process that holds a group until it is killed.
const HOLD_ENV: &str = "APPFENCE_FANOTIFY_HOLD";
const REQUIRE_ENV: &str = "APPFENCE_REQUIRE_FANOTIFY";
const SKIP_ENV: &str = "APPFENCE_SKIP_FANOTIFY";
const MEMFD_SYSCTL: &str = "/proc/sys/vm/memfd_noexec";
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const PYTHON: &str = "/usr/bin/python3";
const LIBZ: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";

/// Why the scenarios cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if let Err(e) = super::sys::fanotify_available() {
        return Some(format!("fanotify unavailable: {e}"));
    }
    let probe = Command::new("unshare")
        .args(["-m", "-p", "-f", "--mount-proc", "true"])
        .output();
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "cannot create namespaces: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

/// Runs `scenario` in a namespace child (see the module docs).
fn in_namespace(name: &str, scenario: fn(&Sandbox)) {
    if std::env::var_os(CHILD_ENV).is_some() {
        let sandbox = Sandbox::new();
        scenario(&sandbox);
        return;
    }
    if let Some(why) = unavailable() {
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let required = std::env::var(REQUIRE_ENV).as_deref() == Ok("1")
            || (as_root && std::env::var(SKIP_ENV).as_deref() != Ok("1"));
        if required {
            panic!("fanotify scenarios cannot run here ({why}); as root they must (set {SKIP_ENV}=1 to skip)");
        }
        println!("skipped: {why}");
        return;
    }
    let memfd_before = std::fs::read_to_string(MEMFD_SYSCTL).ok();
    let test_path = format!("linux::tests::{name}");
    let output = Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .args(["unshare", "-m", "-p", "-f", "--kill-child", "--mount-proc"])
        .args(["--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", &test_path, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("spawn the namespace child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- child stdout ---\n{stdout}\n--- child stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "scenario {name} failed in its namespace: {}",
        output.status
    );
    assert!(
        stdout.contains("1 passed"),
        "scenario {name} did not run in the child"
    );
    assert_eq!(
        std::fs::read_to_string(MEMFD_SYSCTL).ok(),
        memfd_before,
        "the host's memfd_noexec must be untouched"
    );
}

/// A private tmpfs in the child's mount namespace.
struct Sandbox {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("appfence-fanotify-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path().to_path_buf();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let target = c(root.to_str().unwrap());
        // SAFETY: all pointers are live C strings.
        let rc = unsafe {
            libc::mount(
                c("appfence-test").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                c("size=64m,mode=0755").as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Sandbox { root, _dir: dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Copies `from` into the sandbox as an executable owned by root.
    fn copy(&self, from: &str, name: &str) -> PathBuf {
        let to = self.path(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    }

    fn write_executable(&self, name: &str, content: &str) -> PathBuf {
        let to = self.path(name);
        std::fs::write(&to, content).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    }

    /// The configuration every scenario starts from: only this tmpfs, a package
    /// database that does not exist (nothing trusted from packages), the real sysctl.
    fn config(&self) -> FanotifyConfig {
        FanotifyConfig {
            only_mounts: Some(vec![self.root.clone()]),
            package_db_root: self.path("no-package-database"),
            ..FanotifyConfig::default()
        }
    }

    fn enforcer(&self, config: FanotifyConfig) -> FanotifyEnforcer {
        FanotifyEnforcer::new(
            config,
            Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
                1_700_000_000,
            ))),
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.root.to_str().unwrap()).unwrap();
        // SAFETY: live C string. Detach: a program still running from it must not stop us.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Counters are bumped and records written after the answer: poll (for up to 2 s)
/// until `done` holds, and return what was seen last.
fn stats_when(enforcer: &FanotifyEnforcer, done: impl Fn(&EnforcerStats) -> bool) -> EnforcerStats {
    for _ in 0..100 {
        let stats = enforcer.stats();
        if done(&stats) {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    enforcer.stats()
}

fn denials_when(
    enforcer: &FanotifyEnforcer,
    done: impl Fn(&[DenialRecord]) -> bool,
) -> Vec<DenialRecord> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen.extend(enforcer.drain_denials());
        if done(&seen) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

fn sha256_of(path: &Path) -> Sha256Hash {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).into()
}

fn run(program: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

fn assert_runs(program: &Path, args: &[&str]) {
    match run(program, args) {
        Ok(out) => assert!(
            out.status.success(),
            "{} {args:?} ran but failed: {} {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{} should run: {e}", program.display()),
    }
}

fn assert_exec_denied(program: &Path) {
    match run(program, &[]) {
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)),
            "{}: unexpected error {e}",
            program.display()
        ),
        Ok(out) => panic!(
            "{} should be denied, ran: {}",
            program.display(),
            out.status
        ),
    }
}

/// Runs a helper (on the root filesystem, not marked) and expects it to fail with
/// "Operation not permitted" on its stderr.
fn assert_load_denied(program: &str, args: &[&str]) {
    let out = run(Path::new(program), args).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Operation not permitted"),
        "{program} {args:?} should be refused: {} {stderr}",
        out.status
    );
}

fn dlopen(library: &Path) -> Vec<String> {
    vec![
        "-c".into(),
        "import ctypes, sys; ctypes.CDLL(sys.argv[1])".into(),
        library.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn allowlisted_binary_runs_unknown_and_modified_are_denied() {
    in_namespace(
        "allowlisted_binary_runs_unknown_and_modified_are_denied",
        |sb| {
            let allowed = sb.copy("/bin/true", "allowed");
            let unknown = sb.copy("/bin/false", "unknown");
            let modified = sb.copy("/bin/true", "modified");
            std::fs::OpenOptions::new()
                .append(true)
                .open(&modified)
                .unwrap()
                .write_all(b"tampered")
                .unwrap();
            let mut config = sb.config();
            config.allowlist = vec![sha256_of(&allowed)];
            let enforcer = sb.enforcer(config);
            let report = enforcer.apply_blocking(true).unwrap();
            println!("restrict: {report:?}");
            assert!(report.detail.unwrap().contains("marked 1 filesystem"));
            assert!(enforcer.is_restricted());

            assert_runs(&allowed, &[]);
            assert_runs(&allowed, &[]);
            assert_exec_denied(&unknown);
            assert_exec_denied(&modified);
            let stats = stats_when(&enforcer, |s| s.denied >= 2 && s.ignore_marks >= 1);
            println!("{stats:?}");
            assert!(stats.denied >= 2, "{stats:?}");
            assert!(
                stats.cache_hits + stats.ignore_marks >= 1,
                "the second run is cached or ignored: {stats:?}"
            );
            assert!(stats.ignore_marks >= 1, "root-owned, trusted: {stats:?}");

            // Writing to the allowed file clears its ignore mark and changes its ctime.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&allowed)
                .unwrap()
                .write_all(b"x")
                .unwrap();
            assert_exec_denied(&allowed);

            let denials = denials_when(&enforcer, |d| d.len() >= 3);
            println!("{denials:#?}");
            let unknown_record = denials
                .iter()
                .find(|d| d.path.as_deref() == Some(unknown.as_path()))
                .expect("the unknown binary's denial is recorded");
            assert_eq!(unknown_record.access, AccessKind::Exec);
            assert_eq!(
                unknown_record.sha256.as_deref(),
                Some(hex::encode(sha256_of(&unknown)).as_str())
            );
            assert!(unknown_record.pid > 1);
            assert!(!unknown_record.monitor_only && !unknown_record.by_deadline);
            assert!(denials
                .iter()
                .any(|d| d.path.as_deref() == Some(modified.as_path())));

            // The uid, the parent program and the command line are read after answering,
            // from /proc: a process that lingers after its refused exec has them
            // recorded; the user name comes from /etc/passwd.
            let lingering = "import os, sys, time\n\
                try:\n\
                \x20   os.execv(sys.argv[1], [sys.argv[1]])\n\
                except PermissionError:\n\
                \x20   time.sleep(1)\n";
            assert_runs(
                Path::new(PYTHON),
                &["-c", lingering, unknown.to_str().unwrap()],
            );
            let denials = denials_when(&enforcer, |d| !d.is_empty());
            let record = denials
                .iter()
                .find(|d| d.path.as_deref() == Some(unknown.as_path()))
                .expect("the second attempt is recorded too");
            // SAFETY: getuid has no preconditions.
            let me = unsafe { libc::getuid() };
            assert_eq!(record.uid, Some(me));
            let parent = record.parent_program.as_ref().expect("parent program");
            assert!(parent.to_string_lossy().contains("python3"), "{parent:?}");
            let command_line = record.command_line.as_deref().expect("command line");
            assert!(
                command_line.starts_with(PYTHON) || command_line.starts_with("python3"),
                "{command_line:?}"
            );
            assert!(
                command_line.contains(" -c import os, sys, time\ntry:")
                    && command_line.ends_with(&format!(" {}", unknown.display())),
                "{command_line:?}"
            );
            let my_name = passwd_name_of(me).expect("this user is in /etc/passwd");
            assert_eq!(record.user.as_deref(), Some(my_name.as_str()));
            let event = denial_event(record.clone());
            assert_eq!(event.command_line.as_deref(), Some(command_line));
            assert_eq!(event.user, Some(my_name));

            // A process that exits at once after its refused exec, as a shell's forked
            // child does: a file not seen before goes to a worker, which reads the
            // process while the kernel still holds it.
            let fresh = sb.copy("/bin/false", "fresh");
            let quitting = "import os, sys\n\
                try:\n\
                \x20   os.execv(sys.argv[1], [sys.argv[1]])\n\
                except PermissionError:\n\
                \x20   os._exit(3)\n";
            let status = std::process::Command::new(PYTHON)
                .args(["-c", quitting, fresh.to_str().unwrap()])
                .status()
                .unwrap();
            assert_eq!(status.code(), Some(3), "the exec was refused");
            let denials = denials_when(&enforcer, |d| {
                d.iter().any(|r| r.path.as_deref() == Some(fresh.as_path()))
            });
            let record = denials
                .iter()
                .find(|d| d.path.as_deref() == Some(fresh.as_path()))
                .unwrap();
            let command_line = record.command_line.as_deref().expect("command line");
            assert!(
                command_line.contains("os._exit(3)")
                    && command_line.ends_with(&format!(" {}", fresh.display())),
                "{command_line:?}"
            );
            assert_eq!(record.uid, Some(me));
            assert!(record.parent_program.is_some(), "{record:?}");
        },
    );
}

/// The first name /etc/passwd gives `uid`, read here independently of the agent's parser.
fn passwd_name_of(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2] == uid.to_string())
        .map(|f| f[0].to_string())
}

#[test]
fn loader_and_dlopen_of_unknown_objects_are_denied() {
    in_namespace("loader_and_dlopen_of_unknown_objects_are_denied", |sb| {
        let allowed = sb.copy("/bin/true", "allowed");
        let unknown = sb.copy("/bin/false", "unknown");
        let known_lib = sb.copy(LIBZ, "libknown.so");
        let unknown_lib = sb.path("libunknown.so");
        std::fs::copy(LIBZ, &unknown_lib).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&unknown_lib)
            .unwrap()
            .write_all(b"different")
            .unwrap();
        let mut config = sb.config();
        config.allowlist = vec![sha256_of(&allowed), sha256_of(&known_lib)];
        let enforcer = sb.enforcer(config);
        enforcer.apply_blocking(true).unwrap();

        assert_runs(Path::new(LOADER), &[allowed.to_str().unwrap()]);
        assert_load_denied(LOADER, &[unknown.to_str().unwrap()]);
        assert_runs(Path::new(PYTHON), &strs(&dlopen(&known_lib)));
        assert_load_denied(PYTHON, &strs(&dlopen(&unknown_lib)));
        // Reading a non-ELF file is never in the way.
        let text = sb.path("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        assert_runs(Path::new("/bin/cat"), &[text.to_str().unwrap()]);

        let denials = denials_when(&enforcer, |d| d.len() >= 2);
        assert!(denials
            .iter()
            .any(|d| d.access == AccessKind::ElfOpen
                && d.path.as_deref() == Some(unknown_lib.as_path())));
        assert!(denials.iter().any(
            |d| d.access == AccessKind::ElfOpen && d.path.as_deref() == Some(unknown.as_path())
        ));
    });
}

#[test]
fn script_with_unknown_interpreter_is_denied() {
    in_namespace("script_with_unknown_interpreter_is_denied", |sb| {
        let known_sh = sb.copy("/bin/dash", "known-sh");
        let unknown_sh = sb.copy("/bin/dash", "unknown-sh");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&unknown_sh)
            .unwrap()
            .write_all(b"different")
            .unwrap();
        let good = sb.write_executable("good.sh", &format!("#!{}\nexit 0\n", known_sh.display()));
        let bad = sb.write_executable("bad.sh", &format!("#!{}\nexit 0\n", unknown_sh.display()));
        let unlisted = sb.write_executable(
            "unlisted.sh",
            &format!("#!{}\nexit 0\n", known_sh.display()),
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&unlisted)
            .unwrap()
            .write_all(b"# unlisted\n")
            .unwrap();
        let mut config = sb.config();
        config.allowlist = vec![sha256_of(&known_sh), sha256_of(&good), sha256_of(&bad)];
        let enforcer = sb.enforcer(config);
        enforcer.apply_blocking(true).unwrap();

        assert_runs(&good, &[]);
        assert_exec_denied(&bad);
        assert_exec_denied(&unlisted);
    });
}

#[test]
fn memfd_execution_is_denied_while_restricted() {
    in_namespace("memfd_execution_is_denied_while_restricted", |sb| {
        // Exit 0: the memfd copy of /bin/true ran; 3: refused.
        let script = "import os, sys\n\
            try:\n\
            \x20   fd = os.memfd_create('x', 0)\n\
            \x20   os.write(fd, open('/bin/true', 'rb').read())\n\
            \x20   os.execv('/proc/self/fd/%d' % fd, ['x'])\n\
            except PermissionError as e:\n\
            \x20   print(e)\n\
            \x20   sys.exit(3)\n";
        let memfd_exec = || {
            run(Path::new(PYTHON), &["-c", script])
                .unwrap()
                .status
                .code()
        };
        let sysctl = Path::new(MEMFD_SYSCTL);
        let enforcer = sb.enforcer(sb.config());
        if !sysctl.exists() {
            let report = enforcer.apply_blocking(true).unwrap();
            println!("this kernel has no vm.memfd_noexec (Linux < 6.3): {report:?}");
            assert!(report.detail.unwrap().contains("unsupported"));
            return;
        }
        let before = std::fs::read_to_string(sysctl).unwrap();
        assert_eq!(memfd_exec(), Some(0), "memfd execution works before");
        let report = enforcer.apply_blocking(true).unwrap();
        println!("restrict: {report:?}");
        assert_eq!(std::fs::read_to_string(sysctl).unwrap().trim(), "2");
        assert_eq!(
            memfd_exec(),
            Some(3),
            "memfd execution is refused while restricted"
        );
        enforcer.apply_blocking(false).unwrap();
        assert_eq!(std::fs::read_to_string(sysctl).unwrap(), before);
        assert_eq!(memfd_exec(), Some(0), "memfd execution works again after");
    });
}

#[test]
fn unrestrict_restores_everything() {
    in_namespace("unrestrict_restores_everything", |sb| {
        let unknown = sb.copy("/bin/true", "unknown");
        let unknown_lib = sb.copy(LIBZ, "libunknown.so");
        let memfd_before = std::fs::read_to_string(MEMFD_SYSCTL).ok();
        let enforcer = sb.enforcer(sb.config());
        assert_eq!(
            enforcer.apply_blocking(false).unwrap().detail.as_deref(),
            Some("not restricted")
        );
        enforcer.apply_blocking(true).unwrap();
        let again = enforcer.apply_blocking(true).unwrap();
        assert!(again.detail.unwrap().starts_with("already restricted"));
        assert_exec_denied(&unknown);
        assert_load_denied(PYTHON, &strs(&dlopen(&unknown_lib)));

        let report = enforcer.apply_blocking(false).unwrap();
        println!("unrestrict: {report:?}");
        assert!(!enforcer.is_restricted());
        assert_runs(&unknown, &[]);
        assert_runs(Path::new(PYTHON), &strs(&dlopen(&unknown_lib)));
        assert_runs(Path::new(LOADER), &[unknown.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(MEMFD_SYSCTL).ok(), memfd_before);
        enforcer.apply_blocking(false).unwrap();
    });
}

#[test]
fn a_slow_decision_is_answered_at_the_deadline() {
    in_namespace("a_slow_decision_is_answered_at_the_deadline", |sb| {
        let allowed = sb.copy("/bin/true", "allowed");
        let unknown = sb.copy("/bin/true", "unknown");

        // Default allow: an unknown program runs when no decision comes in time.
        let mut config = sb.config();
        config.deadline = Duration::from_millis(200);
        let enforcer = sb.enforcer(config.clone());
        enforcer.set_decision_delay(Duration::from_secs(3));
        enforcer.apply_blocking(true).unwrap();
        assert_runs(&unknown, &[]);
        let stats = stats_when(&enforcer, |s| s.deadline_expired >= 1);
        println!("{stats:?}");
        assert!(stats.deadline_expired >= 1, "{stats:?}");
        assert_eq!(stats.denied, 0);
        drop(enforcer);

        // Default deny: even an allowlisted program is refused at the deadline.
        config.answer_on_deadline = DeadlineAnswer::Deny;
        config.allowlist = vec![sha256_of(&allowed)];
        let enforcer = sb.enforcer(config);
        enforcer.set_decision_delay(Duration::from_secs(3));
        enforcer.apply_blocking(true).unwrap();
        assert_exec_denied(&allowed);
        let stats = stats_when(&enforcer, |s| s.deadline_expired >= 1 && s.denied >= 1);
        assert!(
            stats.deadline_expired >= 1 && stats.denied >= 1,
            "{stats:?}"
        );
        let denials = denials_when(&enforcer, |d| d.iter().any(|d| d.by_deadline));
        assert!(denials.iter().any(|d| d.by_deadline), "{denials:?}");
    });
}

#[test]
fn package_files_are_verified_against_dpkg() {
    in_namespace("package_files_are_verified_against_dpkg", |sb| {
        let packaged = sb.copy("/bin/true", "packaged");
        let changed = sb.copy("/bin/true", "changed");
        let unlisted = sb.copy("/bin/true", "unlisted");
        let db_root = sb.path("dpkg-root");
        let info = db_root.join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        let line = |path: &Path| {
            let md5 = md5::Md5::digest(std::fs::read(path).unwrap());
            let rel = path.to_str().unwrap().trim_start_matches('/');
            format!("{}  {rel}\n", hex::encode(md5))
        };
        std::fs::write(info.join("fake.md5sums"), line(&packaged) + &line(&changed)).unwrap();
        // Content no longer matches what the package database recorded.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&changed)
            .unwrap()
            .write_all(b"patched")
            .unwrap();
        std::fs::copy("/bin/false", &unlisted).unwrap();

        let mut config = sb.config();
        config.package_db_root = db_root;
        let enforcer = sb.enforcer(config);
        let report = enforcer.apply_blocking(true).unwrap();
        println!("restrict: {report:?}");
        assert!(report.detail.unwrap().contains("2 package files trusted"));
        assert_runs(&packaged, &[]);
        assert_exec_denied(&changed);
        assert_exec_denied(&unlisted);
    });
}

/// A package root with an (empty) rpm database, and a stand-in `rpm` that prints
/// `output` as the query's answer, then runs `then` (shell).
fn fake_rpm_root(sb: &Sandbox, output: &[u8], then: &str) -> (PathBuf, PathBuf) {
    let root = sb.path("rpm-root");
    let db = root.join("var/lib/rpm");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("rpmdb.sqlite"), b"").unwrap();
    let answer = sb.path("rpm-answer");
    std::fs::write(&answer, output).unwrap();
    let rpm = sb.write_executable(
        "fake-rpm",
        &format!(
            "#!/bin/sh
cat '{}'
{then}
",
            answer.display()
        ),
    );
    (root, rpm)
}

/// One line of the rpm query's answer for the file at `path` as it is now.
fn rpm_line(path: &Path, algorithm: &str) -> String {
    let content = std::fs::read(path).unwrap();
    let digest = match algorithm {
        "8" => hex::encode(sha2::Sha256::digest(&content)),
        "(none)" => hex::encode(md5::Md5::digest(&content)),
        "10" => hex::encode(sha2::Sha512::digest(&content)),
        other => panic!("no digest for algorithm {other}"),
    };
    format!("{}\t{algorithm}\t{digest}\t-rwxr-xr-x\n", path.display())
}

#[test]
fn package_files_are_verified_against_rpm() {
    in_namespace("package_files_are_verified_against_rpm", |sb| {
        let packaged = sb.copy("/bin/true", "packaged");
        let old_package = sb.copy("/bin/true", "old-package");
        let sha512_package = sb.copy("/bin/true", "sha512-package");
        let changed = sb.copy("/bin/true", "changed");
        let unlisted = sb.copy("/bin/false", "unlisted");
        let mut answer = rpm_line(&packaged, "8")
            + &rpm_line(&old_package, "(none)")
            + &rpm_line(&sha512_package, "10")
            + &rpm_line(&changed, "8");
        answer += &format!("{}\t8\t\tdrwxr-xr-x\n", sb.root.display());
        answer += &format!("{}\t8\t\tlrwxrwxrwx\n", sb.path("link").display());
        // Content no longer matches what the package database recorded.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&changed)
            .unwrap()
            .write_all(b"patched")
            .unwrap();
        let (root, rpm) = fake_rpm_root(sb, answer.as_bytes(), "exit 0");

        let mut config = sb.config();
        config.package_db_root = root;
        config.rpm_command = rpm;
        let enforcer = sb.enforcer(config);
        let report = enforcer.apply_blocking(true).unwrap();
        println!("restrict: {report:?}");
        assert!(report.detail.unwrap().contains("4 package files trusted"));
        assert_runs(&packaged, &[]);
        assert_runs(&old_package, &[]);
        assert_runs(&sha512_package, &[]);
        assert_exec_denied(&changed);
        assert_exec_denied(&unlisted);
        let denials = denials_when(&enforcer, |d| d.len() >= 2);
        let record = denials
            .iter()
            .find(|d| d.path.as_deref() == Some(changed.as_path()))
            .expect("the changed file's denial is recorded");
        assert_eq!(
            record.sha256.as_deref(),
            Some(hex::encode(sha256_of(&changed)).as_str())
        );
    });
}

#[test]
fn a_failing_rpm_query_trusts_nothing_from_rpm() {
    in_namespace("a_failing_rpm_query_trusts_nothing_from_rpm", |sb| {
        let packaged = sb.copy("/bin/true", "packaged");
        let allowed = sb.copy("/bin/false", "allowed");
        let answer = rpm_line(&packaged, "8");
        for (then, timeout) in [
            (
                "echo 'error: rpmdb open failed' >&2; exit 1",
                Duration::from_secs(30),
            ),
            ("sleep 30", Duration::from_millis(300)),
        ] {
            let (root, rpm) = fake_rpm_root(sb, answer.as_bytes(), then);
            let mut config = sb.config();
            config.package_db_root = root;
            config.rpm_command = rpm;
            config.rpm_timeout = timeout;
            config.allowlist = vec![sha256_of(&allowed)];
            let enforcer = sb.enforcer(config);
            let started = std::time::Instant::now();
            let report = enforcer.apply_blocking(true).unwrap();
            println!("restrict ({then}): {report:?} in {:?}", started.elapsed());
            assert!(started.elapsed() < Duration::from_secs(10));
            assert!(report.detail.unwrap().contains("0 package files trusted"));
            assert_exec_denied(&packaged);
            // Events are still answered: the allowlist works.
            assert_eq!(run(&allowed, &[]).unwrap().status.code(), Some(1));
            enforcer.apply_blocking(false).unwrap();
        }
    });
}

/// Body of the process that holds a group until it is killed (see
/// `killing_the_enforcer_fails_open`).
fn hold_restricted(mount: &Path) -> ! {
    let memfd = mount.join("holder-memfd_noexec");
    std::fs::write(&memfd, "0\n").unwrap();
    let config = FanotifyConfig {
        only_mounts: Some(vec![mount.to_path_buf()]),
        package_db_root: mount.join("no-package-database"),
        memfd_sysctl: memfd,
        ..FanotifyConfig::default()
    };
    let enforcer = FanotifyEnforcer::new(
        config,
        Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
            1_700_000_000,
        ))),
    );
    enforcer.apply_blocking(true).unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn killing_the_enforcer_fails_open() {
    if let Some(mount) = std::env::var_os(HOLD_ENV) {
        hold_restricted(Path::new(&mount));
    }
    in_namespace("killing_the_enforcer_fails_open", |sb| {
        let unknown = sb.copy("/bin/true", "unknown");
        let mut holder = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "linux::tests::killing_the_enforcer_fails_open",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD_ENV, &sb.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.contains("READY"))),
            "the holder never restricted"
        );
        assert_exec_denied(&unknown);

        holder.kill().unwrap(); // SIGKILL
        holder.wait().unwrap();
        assert_runs(&unknown, &[]);

        // Restarting the enforcer re-applies the restriction.
        let enforcer = sb.enforcer(sb.config());
        enforcer.apply_blocking(true).unwrap();
        assert_exec_denied(&unknown);
    });
}

#[test]
fn monitor_mode_denies_nothing_but_records() {
    in_namespace("monitor_mode_denies_nothing_but_records", |sb| {
        let unknown = sb.copy("/bin/true", "unknown");
        let mut config = sb.config();
        config.monitor = true;
        let enforcer = sb.enforcer(config);
        enforcer.apply_blocking(true).unwrap();
        assert_runs(&unknown, &[]);
        assert_runs(Path::new(LOADER), &[unknown.to_str().unwrap()]);
        let stats = stats_when(&enforcer, |s| s.would_deny >= 2);
        println!("{stats:?}");
        assert_eq!(stats.denied, 0, "{stats:?}");
        assert!(stats.would_deny >= 2, "{stats:?}");
        let denials = denials_when(&enforcer, |d| d.len() >= 2);
        assert!(!denials.is_empty() && denials.iter().all(|d| d.monitor_only));
        assert!(denials.iter().any(|d| d.access == AccessKind::Exec));
        assert!(denials.iter().any(|d| d.access == AccessKind::ElfOpen));

        // Leaving monitor mode enforces at once, from the same cached decisions.
        enforcer.set_monitor(false);
        assert_exec_denied(&unknown);
    });
}

#[test]
fn the_allowlist_can_be_replaced_at_runtime() {
    in_namespace("the_allowlist_can_be_replaced_at_runtime", |sb| {
        let first = sb.copy("/bin/true", "first");
        let second = sb.copy("/bin/false", "second");
        let mut config = sb.config();
        config.allowlist = vec![sha256_of(&first)];
        let enforcer = sb.enforcer(config);
        enforcer.apply_blocking(true).unwrap();
        assert_runs(&first, &[]);
        let second_status = || run(&second, &[]).map(|out| out.status.code());
        assert!(second_status().is_err(), "not allowed yet");

        enforcer.set_allowlist([sha256_of(&second)]);
        assert_eq!(second_status().unwrap(), Some(1), "/bin/false ran");
        // `first` had an ignore mark; replacing the allowlist drops it.
        assert_exec_denied(&first);
    });
}

#[test]
fn new_filesystems_are_marked_while_restricted() {
    in_namespace("new_filesystems_are_marked_while_restricted", |sb| {
        // "Every local filesystem", seen only under the sandbox so `/` is never marked.
        let config = FanotifyConfig {
            only_mounts: None,
            ..sb.config()
        };
        let enforcer = sb.enforcer(config);
        enforcer.set_mount_scope(Some(sb.root.clone()));
        enforcer.apply_blocking(true).unwrap();
        let root = sb.root.display().to_string();
        assert_eq!(Enforcer::coverage(&enforcer), vec![root.clone()]);

        let later = sb.path("later");
        std::fs::create_dir(&later).unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        // SAFETY: all pointers are live C strings.
        let rc = unsafe {
            libc::mount(
                c("appfence-later").as_ptr(),
                c(later.to_str().unwrap()).as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                c("size=16m,mode=0755").as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount: {}", std::io::Error::last_os_error());
        let unknown = sb.copy("/bin/true", "later/unknown");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Enforcer::coverage(&enforcer).len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the new mount was not marked"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            Enforcer::coverage(&enforcer),
            vec![root, later.display().to_string()]
        );
        assert_exec_denied(&unknown);

        // Through the trait the loop uses: denials as the server receives them.
        let mut events = Vec::new();
        for _ in 0..100 {
            events.extend(Enforcer::drain_denials(&enforcer));
            if !events.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let event = events
            .iter()
            .find(|e| e.path == unknown.display().to_string())
            .expect("a denial for the unknown program");
        assert_eq!(event.kind, appfence_proto::agent::DenialKind::Exec);
        assert!(!event.monitor && event.sha256.is_some());

        // The allowlist and the mode, through the trait too.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(Enforcer::set_allowlist(
            &enforcer,
            &[hex::encode(sha256_of(&unknown))],
        ));
        assert_runs(&unknown, &[]);
        let other = sb.copy("/bin/false", "later/other");
        Enforcer::set_mode(&enforcer, appfence_proto::agent::EnforcementMode::Monitor);
        assert_eq!(
            run(&other, &[]).unwrap().status.code(),
            Some(1),
            "monitored, not denied"
        );

        enforcer.apply_blocking(false).unwrap();
        assert!(Enforcer::coverage(&enforcer).is_empty());
    });
}

#[test]
fn capabilities_describe_this_kernel() {
    let enforcer = FanotifyEnforcer::new(
        FanotifyConfig::default(),
        Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
            1_700_000_000,
        ))),
    );
    let caps = enforcer.capabilities();
    assert!(!caps.simulated);
    assert!(!enforcer.is_restricted());
    if unavailable().is_none() {
        assert!(caps.can_restrict_execution);
        assert!(caps.exec_permission_events && caps.filesystem_marks);
    }
}

fn file_rule(hash: Sha256Hash, id: &str, generate_alert: bool) -> appfence_proto::agent::FileRule {
    appfence_proto::agent::FileRule {
        sha256: hex::encode(hash),
        action: "Block".into(),
        indicator_id: id.into(),
        generate_alert,
        expires: None,
    }
}

/// Runs `program` until it succeeds, for up to a second (a change just applied).
fn runs_within_a_second(program: &Path) -> bool {
    for _ in 0..50 {
        if run(program, &[]).is_ok_and(|out| out.status.success()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn blocks_deny_and_audits_report_on_an_unrestricted_host() {
    in_namespace(
        "blocks_deny_and_audits_report_on_an_unrestricted_host",
        |sb| {
            let blocked = sb.copy("/bin/true", "blocked");
            let audited = sb.copy("/bin/true", "audited");
            // Another version of true: a different hash, still a working program.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&audited)
                .unwrap()
                .write_all(b"audited")
                .unwrap();
            let other = sb.copy("/bin/echo", "other");
            let enforcer = sb.enforcer(sb.config());
            assert!(
                !enforcer.is_watching(),
                "no rules, no restriction: no marks"
            );
            let block = file_rule(sha256_of(&blocked), "ind-block", true);
            let audit = file_rule(sha256_of(&audited), "ind-audit", false);
            enforcer.set_file_rules(std::slice::from_ref(&block), std::slice::from_ref(&audit));
            assert!(enforcer.is_watching() && !enforcer.is_restricted());
            assert!(
                Enforcer::coverage(&enforcer).is_empty(),
                "nothing restricted"
            );

            assert_exec_denied(&blocked);
            assert_runs(&audited, &[]);
            assert_runs(&audited, &[]);
            assert_runs(&other, &["unknown programs run"]);
            let records = denials_when(&enforcer, |d| d.len() >= 3);
            println!("{records:#?}");
            let denial = records
                .iter()
                .find(|r| r.path.as_deref() == Some(blocked.as_path()))
                .expect("the block is reported");
            assert_eq!(denial.rule, Some(RuleOutcome::Blocked));
            assert_eq!(denial.indicator_id.as_deref(), Some("ind-block"));
            assert!(denial.alert && !denial.monitor_only);
            let audits: Vec<&DenialRecord> = records
                .iter()
                .filter(|r| r.path.as_deref() == Some(audited.as_path()))
                .collect();
            assert_eq!(
                audits.len(),
                2,
                "every audited run is reported: {audits:#?}"
            );
            assert!(audits.iter().all(|r| r.rule == Some(RuleOutcome::Audited)
                && r.monitor_only
                && r.indicator_id.as_deref() == Some("ind-audit")
                && !r.alert));
            assert!(
                !records
                    .iter()
                    .any(|r| r.path.as_deref() == Some(other.as_path())),
                "an unrestricted host reports nothing else"
            );
            let event = denial_event(denial.clone());
            assert_eq!(event.rule, Some(RuleOutcome::Blocked));
            assert!(!event.monitor && event.alert);

            // Lifting the block while the audit stays: the cached denial is forgotten.
            enforcer.set_file_rules(&[], std::slice::from_ref(&audit));
            assert!(runs_within_a_second(&blocked), "the block is lifted");
            // Blocking again, then no rules at all: the marks go.
            enforcer.set_file_rules(std::slice::from_ref(&block), &[]);
            assert_exec_denied(&blocked);
            enforcer.set_file_rules(&[], &[]);
            assert!(!enforcer.is_watching());
            assert!(runs_within_a_second(&blocked));
        },
    );
}

#[test]
fn a_block_beats_the_allowlist_and_packages_while_restricted() {
    in_namespace(
        "a_block_beats_the_allowlist_and_packages_while_restricted",
        |sb| {
            let allowlisted = sb.copy("/bin/true", "allowlisted");
            let packaged = sb.copy("/bin/true", "packaged");
            let trusted = sb.copy("/bin/echo", "trusted");
            let db_root = sb.path("dpkg-root");
            let info = db_root.join("var/lib/dpkg/info");
            std::fs::create_dir_all(&info).unwrap();
            let md5 = md5::Md5::digest(std::fs::read(&packaged).unwrap());
            let rel = packaged.to_str().unwrap().trim_start_matches('/');
            std::fs::write(
                info.join("fake.md5sums"),
                format!("{}  {rel}\n", hex::encode(md5)),
            )
            .unwrap();
            let mut config = sb.config();
            config.package_db_root = db_root;
            config.allowlist = vec![sha256_of(&allowlisted), sha256_of(&trusted)];
            let enforcer = sb.enforcer(config);
            enforcer.apply_blocking(true).unwrap();
            assert_runs(&packaged, &[]);
            assert_runs(&allowlisted, &[]);

            // Both copies of true have the blocked hash: allowlisted and package-verified.
            enforcer.set_file_rules(&[file_rule(sha256_of(&allowlisted), "b", false)], &[]);
            assert!(enforcer.is_restricted());
            assert_exec_denied(&allowlisted);
            assert_exec_denied(&packaged);
            assert_runs(&trusted, &["still trusted"]);
            let records = denials_when(&enforcer, |d| d.len() >= 2);
            assert!(records
                .iter()
                .all(|r| r.rule == Some(RuleOutcome::Blocked) && !r.monitor_only));

            // Monitor mode softens the restriction, not the block.
            enforcer.set_monitor(true);
            assert_exec_denied(&allowlisted);
            enforcer.set_monitor(false);

            // Unrestricted with the block still in force: the block stays, nothing else
            // is denied, memfd_noexec is restored (the harness checks the host's).
            let report = enforcer.apply_blocking(false).unwrap();
            println!("unrestrict: {report:?}");
            assert!(!enforcer.is_restricted() && enforcer.is_watching());
            assert_exec_denied(&packaged);
            let unknown = sb.copy("/bin/ls", "unknown");
            assert_runs(&unknown, &[]);
            // And restricted again: the unknown program is denied once more.
            enforcer.apply_blocking(true).unwrap();
            assert_exec_denied(&unknown);
            assert_exec_denied(&allowlisted);
        },
    );
}

#[test]
fn a_block_for_a_protected_file_is_not_applied() {
    in_namespace("a_block_for_a_protected_file_is_not_applied", |sb| {
        // A copy of the dynamic loader (this binary is too big for the sandbox).
        let loader = sb.copy(LOADER, "loader-copy");
        let blocked = sb.copy("/bin/true", "blocked");
        let enforcer = sb.enforcer(sb.config());
        let protected = enforcer.protected_files();
        println!("{protected:#?}");
        let loader_hash = hex::encode(sha256_of(&loader));
        assert!(protected
            .iter()
            .any(|p| p.sha256 == loader_hash
                && p.role == appfence_proto::agent::ProtectedRole::Loader));
        assert!(protected
            .iter()
            .any(|p| p.role == appfence_proto::agent::ProtectedRole::Agent));
        enforcer.set_file_rules(
            &[
                file_rule(sha256_of(&loader), "loader", true),
                file_rule(sha256_of(&blocked), "true", true),
            ],
            &[],
        );
        assert_exec_denied(&blocked);
        assert_runs(&loader, &["--version"]);
    });
}
