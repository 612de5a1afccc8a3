//! The rpm trust path against the real rpm (Debian's `rpm` package): a package built
//! with rpmbuild and installed into a private root with `rpm --root`, then indexed as
//! the agent indexes a host. Its binary is trusted; a modified copy is not; the index is
//! reused while the database is unchanged and read again when it changes. Without rpm
//! this prints "skipped: ..." (a failure under `CI=true`, where scripts/test installs it).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dpkg::PackageIndex;
use super::rpm::{find_database, load_rpm_cached};
use super::trust::{TrustOutcome, TrustReason, TrustSet};

const RPM: &str = "/usr/bin/rpm";
/// Where RHEL keeps the database (Debian's rpm defaults to ~/.rpmdb, to stay out of
/// dpkg's way).
const DBPATH: &str = "/var/lib/rpm";

fn rpm_available(test: &str) -> bool {
    let found = ["rpm", "rpmbuild"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: rpm is missing under CI"
        );
        println!("skipped: {test}: rpm/rpmbuild are not installed");
    }
    found
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run rpm");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds package `name` holding `file` (an absolute path) with `content`, mode 0755.
fn build_package(work: &Path, name: &str, file: &str, content: &[u8]) -> PathBuf {
    let stage = work.join(format!("stage-{name}"));
    let at = stage.join(file.trim_start_matches('/'));
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::write(&at, content).unwrap();
    std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spec = work.join(format!("{name}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: test\nLicense: MIT\nBuildArch: {arch}\n\
             %description\ntest\n%install\ncp -a {}/. %{{buildroot}}/\n%files\n{file}\n",
            stage.display(),
            arch = std::env::consts::ARCH,
        ),
    )
    .unwrap();
    let out = work.join("rpms");
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--quiet")
        .arg("--define")
        .arg(format!("_topdir {}", work.join("top").display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", out.display()))
        .args([
            "--define",
            "_build_id_links none",
            "--define",
            "__strip /bin/true",
        ])
        .arg(&spec));
    let arch = std::env::consts::ARCH;
    out.join(arch).join(format!("{name}-1.0-1.{arch}.rpm"))
}

fn install(root: &Path, package: &Path) {
    run(Command::new(RPM)
        .arg("--root")
        .arg(root)
        .args([
            "--dbpath",
            DBPATH,
            "-i",
            "--nodeps",
            "--nosignature",
            "--noscripts",
        ])
        .arg(package));
}

fn trusted(set: &TrustSet, file: &Path, as_path: &str) -> Option<TrustReason> {
    let f = std::fs::File::open(file).unwrap();
    let size = f.metadata().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    match set.check(f.as_fd(), size, Some(Path::new(as_path)), deadline) {
        TrustOutcome::Decided { reason, .. } => reason,
        TrustOutcome::Undecided => panic!("undecided"),
    }
}

#[test]
fn a_real_rpm_database_vouches_for_its_files_and_not_for_changed_copies() {
    if !rpm_available("real rpm") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new(RPM)
        .arg("--root")
        .arg(&root)
        .args(["--dbpath", DBPATH, "--initdb"]));
    let probe = "/usr/bin/appfence-probe";
    let content = std::fs::read("/bin/true").unwrap();
    install(
        &root,
        &build_package(work.path(), "appfence-probe", probe, &content),
    );

    let db = find_database(&root).expect("rpm's database under the root");
    let (index, cached) =
        load_rpm_cached(Path::new(RPM), &root, &db, &root, Duration::from_secs(60)).unwrap();
    assert!(!cached);
    assert!(
        index.digests_for(Path::new(probe)).is_some(),
        "{} files indexed",
        index.files()
    );
    let set = TrustSet::new(
        PackageIndex::default(),
        index.clone(),
        None,
        Default::default(),
        1 << 30,
    );
    let installed = root.join(probe.trim_start_matches('/'));
    assert_eq!(trusted(&set, &installed, probe), Some(TrustReason::Package));
    // A modified copy at the same path is not what rpm recorded.
    let modified = work.path().join("modified");
    let mut bytes = content.clone();
    bytes.push(0);
    std::fs::write(&modified, bytes).unwrap();
    assert_eq!(trusted(&set, &modified, probe), None);
    // Another file that rpm does not list is not trusted either.
    assert_eq!(trusted(&set, &installed, "/usr/bin/not-from-rpm"), None);

    // Unchanged database: the same index, without asking rpm again.
    let (again, cached) =
        load_rpm_cached(Path::new(RPM), &root, &db, &root, Duration::from_secs(60)).unwrap();
    assert!(cached);
    assert!(Arc::ptr_eq(&index, &again));
    // A package installed since: read again, and its file is trusted.
    let second = "/usr/bin/appfence-probe-2";
    install(
        &root,
        &build_package(
            work.path(),
            "appfence-probe-two",
            second,
            b"#!/bin/sh\nexit 0\n",
        ),
    );
    let (fresh, cached) =
        load_rpm_cached(Path::new(RPM), &root, &db, &root, Duration::from_secs(60)).unwrap();
    assert!(!cached, "the database changed");
    assert!(fresh.digests_for(Path::new(second)).is_some());
    assert!(fresh.digests_for(Path::new(probe)).is_some());
}
