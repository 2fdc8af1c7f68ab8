//! Installing as the README says, without the checkout's build tree: `cargo install --path crates/herald` (no
//! libtorch, stripped, at most 20 MB), `herald-train` finding libtorch when the checkout moves or the binary
//! is copied out of it, and the Python client as a wheel in a fresh venv with no other package.
//!
//! What each test proves, and how cheaply: the dependency graph of `herald` has no torch crate (`cargo tree`,
//! a second); a real `cargo install --locked --offline` with LIBTORCH pointing nowhere, so that any torch
//! crate in the build would fail it (it shares the workspace's `target/release`, so it compiles only what
//! changed, but the release profile's whole-program LTO relinks `herald` for minutes after any change to it,
//! and a fresh checkout pays one full release build); the libtorch search path read by the dynamic loader
//! itself (`LD_TRACE_LOADED_OBJECTS`); and pip with `--no-index`, so nothing is downloaded.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").to_path_buf()
}

/// A fresh folder for one test under cargo's temporary folder for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("install-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

/// The cargo that built these tests.
fn cargo() -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ran(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}\n{}\n{}", out.status, text(&out.stdout), text(&out.stderr));
}

#[test]
fn herald_depends_on_no_torch_crate() {
    let out = cargo()
        .args(["tree", "--locked", "--offline", "-p", "herald", "-e", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo runs");
    assert_ran("cargo tree -p herald", &out);
    let tree = text(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("herald-daemon ")), "not herald's graph:\n{tree}");
    let torch: Vec<&str> = tree
        .lines()
        .filter(|l| ["tch ", "torch-sys ", "herald-tch ", "herald-train "].iter().any(|c| l.starts_with(c)))
        .collect();
    assert!(torch.is_empty(), "herald must not depend on libtorch; found {torch:?}");
}

/// The names of an ELF64 little-endian file's sections.
fn elf_sections(bytes: &[u8]) -> Vec<String> {
    assert_eq!(&bytes[..6], b"\x7fELF\x02\x01", "not an ELF64 little-endian file");
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let start = names + u32_at(header(i));
            let len = bytes[start..].iter().position(|b| *b == 0).expect("NUL-terminated section name");
            text(&bytes[start..start + len])
        })
        .collect()
}

/// The shared libraries the dynamic loader would load for `bin`, as `name => path` lines (ldd's output),
/// with LD_LIBRARY_PATH unset so that only the binary's own search path counts.
fn loaded_libraries(bin: &Path) -> String {
    let out = Command::new(bin)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert_ran(&format!("the loader on {}", bin.display()), &out);
    text(&out.stdout)
}

#[test]
fn cargo_install_gives_a_stripped_herald_under_20_mb_built_without_libtorch() {
    let dir = scratch("cargo");
    // LIBTORCH pointing nowhere: a torch crate anywhere in the build would fail it (`.cargo/config.toml` sets
    // LIBTORCH only where the environment does not).
    let out = cargo()
        .args(["install", "--locked", "--offline", "--quiet", "--path", "crates/herald", "--root"])
        .arg(&dir)
        .env("LIBTORCH", dir.join("no-libtorch-here"))
        .output()
        .expect("cargo runs");
    assert_ran("cargo install --locked --path crates/herald", &out);
    let bin = dir.join("bin/herald");
    let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(bytes.len() <= 20 << 20, "the installed herald is {} bytes, more than 20 MB", bytes.len());
    let sections = elf_sections(&bytes);
    let debug: Vec<&String> =
        sections.iter().filter(|s| *s == ".symtab" || s.starts_with(".debug_")).collect();
    assert!(debug.is_empty(), "the installed herald is not stripped: {debug:?}");

    let libraries = loaded_libraries(&bin);
    assert!(!libraries.contains("torch"), "herald loads libtorch:\n{libraries}");
    let out = Command::new(&bin).arg("--version").output().expect("the installed herald runs");
    assert_ran("herald --version", &out);
    assert!(text(&out.stdout).starts_with("herald "), "{}", text(&out.stdout));
}

/// `path` with each `dir/..` pair taken out, without asking the file system (the loader prints the search
/// path as it joined it).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Where the loader found libtorch_cpu for `bin`.
fn libtorch_of(bin: &Path) -> PathBuf {
    let libraries = loaded_libraries(bin);
    let line = libraries
        .lines()
        .find(|l| l.trim_start().starts_with("libtorch_cpu.so =>"))
        .unwrap_or_else(|| panic!("{} does not load libtorch_cpu:\n{libraries}", bin.display()));
    let path = line.split("=>").nth(1).and_then(|p| p.split(" (0x").next()).expect("name => path (address)");
    lexical(Path::new(path.trim()))
}

/// `from` as a new name for the same file (a hard link, else a copy): the loader's `$ORIGIN` is the folder it
/// is run from either way.
fn place(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("a folder")).expect("create the folder");
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}

#[test]
fn herald_train_finds_libtorch_beside_a_moved_checkout_and_when_copied_out() {
    let trainer = crate::herald_bin().with_file_name("herald-train");
    assert!(trainer.is_file(), "{} is missing: run `cargo build --workspace --bins`", trainer.display());
    // The LIBTORCH the trainer was built with (`.cargo/config.toml`, or the environment of the build).
    let libtorch = PathBuf::from(env!("LIBTORCH"));
    assert_eq!(libtorch_of(&trainer), lexical(&libtorch.join("lib/libtorch_cpu.so")));

    // The checkout moved: the target folder and .venv/libtorch at the same places relative to each other.
    let dir = scratch("rpath");
    let profile = trainer.parent().expect("target/<profile>");
    let common: PathBuf =
        profile.components().zip(libtorch.components()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect();
    let moved = dir.join("moved");
    let moved_trainer = moved.join(profile.strip_prefix(&common).expect("under the common folder"));
    let moved_trainer = moved_trainer.join("herald-train");
    place(&trainer, &moved_trainer);
    let moved_libtorch = moved.join(libtorch.strip_prefix(&common).expect("under the common folder"));
    std::fs::create_dir_all(moved_libtorch.parent().expect("a folder")).expect("create the folder");
    std::os::unix::fs::symlink(&libtorch, &moved_libtorch).expect("link libtorch");
    let found = libtorch_of(&moved_trainer);
    assert!(found.starts_with(&moved), "the moved trainer loads {}, not the one beside it", found.display());

    // Copied out of the checkout: the absolute fallback, and it runs.
    let copied = dir.join("elsewhere/herald-train");
    place(&trainer, &copied);
    assert_eq!(libtorch_of(&copied), lexical(&libtorch.join("lib/libtorch_cpu.so")));
    let out = Command::new(&copied).arg("--version").env_remove("LD_LIBRARY_PATH").output().expect("runs");
    assert_ran("herald-train --version, copied out of the checkout", &out);
}

/// Copies a folder, leaving out what a build or an editable install left there.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the folder");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("a folder entry");
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if ["__pycache__", "build", "dist"].contains(&name_text.as_ref()) || name_text.ends_with(".egg-info")
        {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().expect("a file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

#[test]
fn the_python_client_installs_as_a_wheel_into_a_fresh_venv_with_no_other_package() {
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `cargo xtask setup`", python.display());
    let dir = scratch("python");
    // Build from a copy, so the build leaves nothing in the checkout; with the venv's setuptools (the
    // pyproject's backend) and no build isolation, so nothing is downloaded.
    let source = dir.join("source");
    copy_tree(&root().join("clients/python"), &source);
    let wheels = dir.join("wheels");
    let out = Command::new(&python)
        .args(["-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"])
        .arg("--wheel-dir")
        .arg(&wheels)
        .arg(&source)
        .output()
        .expect("pip runs");
    assert_ran("pip wheel clients/python", &out);
    let wheel = std::fs::read_dir(&wheels)
        .expect("the wheel folder")
        .map(|e| e.expect("an entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("pip wrote a wheel");

    let venv = dir.join("venv");
    let out = Command::new(&python).args(["-m", "venv"]).arg(&venv).output().expect("python runs");
    assert_ran("python -m venv", &out);
    let fresh = venv.join("bin/python");
    // --no-index: a dependency the wheel declared would fail the install here.
    let out = Command::new(&fresh)
        .args(["-m", "pip", "install", "--quiet", "--no-index"])
        .arg(&wheel)
        .output()
        .expect("the fresh venv's pip runs");
    assert_ran("pip install the wheel into a fresh venv", &out);

    let out = Command::new(&fresh)
        .args(["-c", "import herald, os; print(os.path.realpath(herald.__file__))"])
        .current_dir(&dir)
        .env_remove("PYTHONPATH")
        .output()
        .expect("python runs");
    assert_ran("python -c 'import herald'", &out);
    let module = PathBuf::from(text(&out.stdout).trim());
    let venv_real = venv.canonicalize().expect("the venv");
    assert!(module.starts_with(&venv_real), "herald imports from {}, not the venv", module.display());

    let out = Command::new(&fresh)
        .args(["-m", "pip", "list", "--format", "freeze"])
        .output()
        .expect("the fresh venv's pip runs");
    assert_ran("pip list", &out);
    let installed: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split("==").next())
        .map(str::to_ascii_lowercase)
        .filter(|name| !["pip", "setuptools", "wheel"].contains(&name.as_str()))
        .collect();
    assert_eq!(installed, ["herald-client"], "the fresh venv holds more than the client");
}
