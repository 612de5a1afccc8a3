//! How long the agent takes to load its trust data when a restriction is applied, side
//! by side in one run: this machine's dpkg database, an rpm database (by default the
//! host-sized one `bench/trust-load.sh` builds: 1,500 packages, 199,500 files) read
//! through the real rpm as the agent reads it, and the same rpm database answered from
//! the agent's cache (unchanged database). Prints a Markdown table; rounds interleave
//! the three so that noise on this shared machine hits each alike.
//!
//! Usage: trust_load [--rpm-root DIR] [--rpm-dbpath /var/lib/rpm] [--rounds N]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use appfence_agent::linux::{load_rpm, load_rpm_cached, PackageIndex};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut rpm_root = PathBuf::from("/tmp/appfence-hostsim/root");
    let mut dbpath = PathBuf::from("/var/lib/rpm");
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rpm-root" => rpm_root = args.next().expect("--rpm-root DIR").into(),
            "--rpm-dbpath" => dbpath = args.next().expect("--rpm-dbpath PATH").into(),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let rpm = Path::new("/usr/bin/rpm");
    let timeout = Duration::from_secs(120);
    let (mut dpkg_t, mut rpm_t, mut cached_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dpkg_files, mut dpkg_packages, mut rpm_files) = (0, 0, 0);
    // Warm the page cache and the agent's rpm cache once.
    let _ = PackageIndex::load_dpkg(Path::new("/"), Path::new("/"));
    let _ = load_rpm_cached(rpm, &rpm_root, &dbpath, &rpm_root, timeout).expect("rpm database");
    for round in 1..=rounds {
        let t = Instant::now();
        let index = PackageIndex::load_dpkg(Path::new("/"), Path::new("/")).expect("dpkg database");
        dpkg_t.push(t.elapsed());
        (dpkg_files, dpkg_packages) = (index.files(), index.packages());

        let t = Instant::now();
        let index = load_rpm(rpm, &rpm_root, &dbpath, &rpm_root, timeout).expect("rpm database");
        rpm_t.push(t.elapsed());
        rpm_files = index.files();

        let t = Instant::now();
        let (index, cached) = load_rpm_cached(rpm, &rpm_root, &dbpath, &rpm_root, timeout).unwrap();
        cached_t.push(t.elapsed());
        assert!(cached, "the database did not change");
        assert_eq!(index.files(), rpm_files);
        eprintln!("round {round}/{rounds} done");
    }
    let (d, r, c) = (median(dpkg_t), median(rpm_t), median(cached_t));
    println!(
        "| trust data (median of {rounds} interleaved rounds) | files | load time | vs dpkg |"
    );
    println!("|---|---|---|---|");
    println!("| dpkg, this machine ({dpkg_packages} packages) | {dpkg_files} | {d:.2?} | 1.00× |");
    println!(
        "| rpm -qa through the real rpm, {} | {rpm_files} | {r:.2?} | {:.2}× |",
        rpm_root.display(),
        r.as_secs_f64() / d.as_secs_f64()
    );
    println!(
        "| the same rpm database, unchanged (agent's cache) | {rpm_files} | {c:.2?} | {:.4}× |",
        c.as_secs_f64() / d.as_secs_f64()
    );
}
