//! The programs executed: a copy of `/bin/true`, and a dynamically linked program whose
//! shared libraries are copied onto the tmpfs too and loaded from there
//! (`LD_LIBRARY_PATH`), so that every library open is an ELF open on the marked
//! filesystem. Both keep a pristine copy, so "first-time" runs can replace them with
//! fresh copies (new inodes) before every execution.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sandbox::{install, replace_with_copy, Sandbox};

/// Libraries the compiled program links against, with one symbol of each it refers to
/// (so the loader must resolve it). Only those present on this host are used.
const LIBRARIES: [(&str, &str); 7] = [
    ("libz.so.1", "zlibVersion"),
    ("liblzma.so.5", "lzma_version_number"),
    ("libzstd.so.1", "ZSTD_versionNumber"),
    ("libbz2.so.1.0", "BZ2_bzlibVersion"),
    ("libm.so.6", "cbrt"),
    ("libselinux.so.1", "is_selinux_enabled"),
    ("libcap.so.2", "cap_init"),
];

/// Used when no C compiler is installed: a stock program with a few libraries.
const FALLBACK_PROGRAM: (&str, &str) = ("/usr/bin/ls", "--version");

pub struct Workload {
    pub name: String,
    /// What the report says about it.
    pub description: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (pristine copy, the path that runs): every file of the workload on the tmpfs.
    pub files: Vec<(PathBuf, PathBuf)>,
}

impl Workload {
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Replaces every file of the workload with a fresh copy of its pristine self.
    pub fn refresh(&self) -> io::Result<()> {
        for (pristine, target) in &self.files {
            replace_with_copy(pristine, target)?;
        }
        Ok(())
    }
}

/// `/bin/true`, copied.
pub fn true_program(sandbox: &Sandbox) -> io::Result<Workload> {
    let pristine = sandbox.path("pristine/true");
    let target = sandbox.path("bin/true");
    install(Path::new("/bin/true"), &pristine)?;
    install(&pristine, &target)?;
    Ok(Workload {
        name: "`/bin/true`".into(),
        description:
            "a copy of `/bin/true` on the tmpfs (its libc stays on the unmarked root filesystem)"
                .into(),
        program: target.clone(),
        args: Vec::new(),
        env: Vec::new(),
        files: vec![(pristine, target)],
    })
}

/// The dynamically linked program, built once and installed on every sandbox.
pub struct Dynamic {
    binary: PathBuf,
    args: Vec<String>,
    origin: String,
}

/// Compiles the program in `build` (or, without gcc, picks `ls --version`).
pub fn build_dynamic(build: &Path) -> io::Result<Dynamic> {
    std::fs::create_dir_all(build)?;
    Ok(match compile(build)? {
        Some((binary, libraries)) => Dynamic {
            binary,
            args: Vec::new(),
            origin: format!(
                "a C program compiled by gcc, linked against {}",
                libraries.join(", ")
            ),
        },
        None => Dynamic {
            binary: PathBuf::from(FALLBACK_PROGRAM.0),
            args: vec![FALLBACK_PROGRAM.1.to_string()],
            origin: format!(
                "a copy of `{} {}` (no gcc here)",
                FALLBACK_PROGRAM.0, FALLBACK_PROGRAM.1
            ),
        },
    })
}

/// Installs `dynamic` on the sandbox with every library it loads copied to `<tmpfs>/lib`.
pub fn dynamic_program(sandbox: &Sandbox, dynamic: &Dynamic) -> io::Result<Workload> {
    let (built, args, origin) = (&dynamic.binary, dynamic.args.clone(), &dynamic.origin);
    let name = built.file_name().unwrap().to_string_lossy().to_string();
    let mut files = Vec::new();
    let pristine = sandbox.path(&format!("pristine/{name}"));
    let target = sandbox.path(&format!("bin/{name}"));
    install(built, &pristine)?;
    install(&pristine, &target)?;
    files.push((pristine, target.clone()));

    let lib_dir = sandbox.path("lib");
    let system_libraries = loaded_objects(&target, None)?;
    for library in &system_libraries {
        let file = library.file_name().unwrap().to_string_lossy().to_string();
        let pristine = sandbox.path(&format!("pristine/lib/{file}"));
        install(library, &pristine)?;
        let copy = lib_dir.join(&file);
        install(&pristine, &copy)?;
        files.push((pristine, copy));
    }
    let from_tmpfs = loaded_objects(&target, Some(&lib_dir))?;
    if from_tmpfs.len() != system_libraries.len()
        || !from_tmpfs.iter().all(|l| l.starts_with(&lib_dir))
    {
        return Err(io::Error::other(format!(
            "the libraries do not all load from {}: {from_tmpfs:?}",
            lib_dir.display()
        )));
    }
    let names: Vec<String> = from_tmpfs
        .iter()
        .map(|l| l.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    Ok(Workload {
        name: format!("`{name}` + {} libraries", names.len()),
        description: format!(
            "{origin}; its {} shared objects ({}) copied to the tmpfs and loaded from there with `LD_LIBRARY_PATH` (the dynamic loader itself stays on the root filesystem)",
            names.len(),
            names.join(", ")
        ),
        program: target,
        args,
        env: vec![("LD_LIBRARY_PATH".into(), lib_dir.display().to_string())],
        files,
    })
}

/// Compiles the test program into `build`; `None` when gcc is not installed.
fn compile(build: &Path) -> io::Result<Option<(PathBuf, Vec<String>)>> {
    if Command::new("gcc")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Ok(None);
    }
    let available = library_paths()?;
    let chosen: Vec<(&str, &str, &PathBuf)> = LIBRARIES
        .iter()
        .filter_map(|(lib, symbol)| {
            available
                .iter()
                .find(|(n, _)| n == lib)
                .map(|(_, p)| (*lib, *symbol, p))
        })
        .collect();
    let mut source = String::from("#include <stdio.h>\n");
    for (_, symbol, _) in &chosen {
        source.push_str(&format!("extern void {symbol}(void);\n"));
    }
    source.push_str("static void (*const used[])(void) = {");
    for (_, symbol, _) in &chosen {
        source.push_str(&format!("{symbol}, "));
    }
    source.push_str("0};\nint main(int argc, char **argv) {\n    (void)argv;\n");
    source.push_str("    if (argc > 1000) printf(\"%p\\n\", (void *)used[0]);\n    return 0;\n}\n");
    let source_path = build.join("dynprog.c");
    std::fs::write(&source_path, source)?;
    let binary = build.join("dynprog");
    let output = Command::new("gcc")
        .args(["-O2", "-fno-builtin", "-o"])
        .arg(&binary)
        .arg(&source_path)
        .arg("-Wl,--no-as-needed")
        .args(chosen.iter().map(|(_, _, path)| path.as_os_str()))
        .env("TMPDIR", build)
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "gcc failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(Some((
        binary,
        chosen.iter().map(|(lib, _, _)| lib.to_string()).collect(),
    )))
}

/// `ldconfig -p`: (soname, path) of the x86-64 libraries the loader knows.
fn library_paths() -> io::Result<Vec<(String, PathBuf)>> {
    let output = Command::new("ldconfig").arg("-p").output()?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("x86-64"))
        .filter_map(|line| {
            let (name, path) = line.trim().split_once(" => ")?;
            Some((name.split(' ').next()?.to_string(), PathBuf::from(path)))
        })
        .collect())
}

/// The shared objects the loader maps for `program` (as `ldd` would list them), the
/// loader itself and the vDSO excepted.
fn loaded_objects(program: &Path, library_path: Option<&Path>) -> io::Result<Vec<PathBuf>> {
    let mut command = Command::new(program);
    command
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .stdin(Stdio::null());
    if let Some(dir) = library_path {
        command.env("LD_LIBRARY_PATH", dir);
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "listing the libraries of {} failed: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" => ")?;
            let path = rest.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
