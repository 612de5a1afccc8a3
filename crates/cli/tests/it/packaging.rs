//! The packages: `packaging/build-packages.sh` builds the .deb and .rpm files from the
//! test binary, and their file lists, units and metadata are read back with the
//! packaging tools themselves (`dpkg-deb`, `rpm`). Without those tools this prints
//! "skipped: ..." and passes, except under `CI=true` (scripts/test installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::private_tempdir;
use crate::process::BIN;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn tool_missing() -> Option<&'static str> {
    ["dpkg-deb", "rpmbuild", "rpm"]
        .into_iter()
        .find(|t| Command::new(t).arg("--version").output().is_err())
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a packaging tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn build(out: &Path) -> std::process::Output {
    Command::new(Path::new(ROOT).join("packaging/build-packages.sh"))
        .args(["--binary", BIN, "--out", out.to_str().unwrap(), "--fast"])
        .output()
        .expect("run build-packages.sh")
}

fn file_in_deb(deb: &Path, path: &str) -> String {
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()
        .unwrap()
        .stdout;
    let dir = private_tempdir();
    std::fs::write(dir.path().join("p.tar"), tar).unwrap();
    output(
        Command::new("tar")
            .arg("-xOf")
            .arg(dir.path().join("p.tar"))
            .arg(format!(".{path}")),
    )
}

#[test]
fn debian_and_rpm_packages_hold_the_binary_units_and_config() {
    if let Some(tool) = tool_missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing under CI"
        );
        println!("skipped: packaging: {tool} is not installed");
        return;
    }
    let dir = private_tempdir();
    let built = build(dir.path());
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string();
    let deb = |p: &str| dir.path().join(format!("{p}_{version}_{arch}.deb"));
    let rpm = |p: &str| -> PathBuf {
        let m = std::env::consts::ARCH;
        dir.path().join(m).join(format!("{p}-{version}-1.{m}.rpm"))
    };
    let expected: [(&str, &[&str]); 3] = [
        (
            "appfence",
            &["/usr/bin/appfence", "/usr/share/doc/appfence/appfence.txt"],
        ),
        (
            "appfence-server",
            &[
                "/lib/systemd/system/appfence-server.service",
                "/etc/appfence/server.toml",
                "/usr/lib/sysusers.d/appfence.conf",
            ],
        ),
        (
            "appfence-agent",
            &[
                "/lib/systemd/system/appfence-agent.service",
                "/etc/appfence/agent.env",
            ],
        ),
    ];
    for (package, files) in expected {
        let deb_list = output(Command::new("dpkg-deb").arg("-c").arg(deb(package)));
        let rpm_list = output(Command::new("rpm").arg("-qlp").arg(rpm(package)));
        for f in files {
            assert!(
                deb_list.contains(&format!(".{f}")),
                "{package}.deb lacks {f}:\n{deb_list}"
            );
            assert!(
                rpm_list.lines().any(|l| l == *f),
                "{package}.rpm lacks {f}:\n{rpm_list}"
            );
        }
        let control = output(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(deb(package))
                .arg("Package")
                .arg("Version"),
        );
        assert!(
            control.contains(&format!("Package: {package}")) && control.contains(version),
            "{control}"
        );
        if package != "appfence" {
            let depends = output(
                Command::new("dpkg-deb")
                    .arg("-f")
                    .arg(deb(package))
                    .arg("Depends"),
            );
            assert_eq!(depends.trim(), format!("appfence (= {version})"));
            let requires = output(
                Command::new("rpm")
                    .arg("-qp")
                    .arg("--requires")
                    .arg(rpm(package)),
            );
            assert!(
                requires.contains(&format!("appfence = {version}")),
                "{requires}"
            );
        }
    }
    // The packaged binary is the one built, and runs.
    let packaged = file_in_deb(&deb("appfence"), "/usr/share/doc/appfence/appfence.txt");
    assert!(packaged.contains("Usage: appfence"), "{packaged}");
    // The units: the agent runs the packaged binary; the server is hardened.
    let agent = file_in_deb(
        &deb("appfence-agent"),
        "/lib/systemd/system/appfence-agent.service",
    );
    assert!(
        agent.contains("ExecStart=/usr/bin/appfence agent"),
        "{agent}"
    );
    let server = file_in_deb(
        &deb("appfence-server"),
        "/lib/systemd/system/appfence-server.service",
    );
    for line in [
        "User=appfence",
        "StateDirectory=appfence",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "PrivateTmp=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(server.contains(line), "the server unit lacks {line:?}");
    }
    // The config file the package ships is one the server accepts.
    let config = file_in_deb(&deb("appfence-server"), "/etc/appfence/server.toml");
    let cfg = dir.path().join("server.toml");
    std::fs::write(&cfg, config).unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let scripts = output(
        Command::new("rpm")
            .arg("-qp")
            .arg("--scripts")
            .arg(rpm("appfence-server")),
    );
    assert!(
        scripts.contains("systemd-sysusers appfence.conf"),
        "{scripts}"
    );
    let check = Command::new(BIN)
        .args([
            "keys",
            "list",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the shipped config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_package_without_its_binary_is_not_built() {
    if tool_missing().is_some() {
        println!("skipped: packaging: tools missing");
        return;
    }
    let dir = private_tempdir();
    let out = Command::new(Path::new(ROOT).join("packaging/build-packages.sh"))
        .args([
            "--binary",
            "/nonexistent/appfence",
            "--out",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no executable binary at /nonexistent/appfence"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// The server unit's `systemd-analyze security` exposure, as the README states it.
#[test]
fn the_server_unit_scores_as_documented() {
    let unit = Path::new(ROOT).join("packaging/appfence-server.service");
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
    else {
        println!("skipped: systemd-analyze is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("appfence-server.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure level {score:.1} OK")),
        "the README must state the measured score {score:.1}"
    );
}
