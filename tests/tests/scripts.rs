//! The README's scripts, with a stand-in `cargo` and loop binary: what a new user sees
//! while `scripts/loop.sh` builds.

use lanyard_e2e::bins::workspace_root;
use lanyard_e2e::cmd::run_cmd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn loop_sh_says_it_is_building_and_lets_cargo_show_its_progress() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bin = tmp.path().join("bin");
    let target = tmp.path().join("target");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(target.join("debug")).expect("target");
    let args_file = tmp.path().join("cargo-args");
    script(&bin.join("cargo"), &format!("echo \"$@\" > '{}'", args_file.display()));
    script(&target.join("debug/lanyard-loop"), "echo the loop ran");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = run_cmd(
        Command::new("bash")
            .arg(workspace_root().join("scripts/loop.sh"))
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", &target),
        None,
    )
    .ok();
    assert!(out.stderr.contains("building"), "says it is building:\n{out}");
    assert!(out.stdout.contains("the loop ran"), "{out}");
    let args = std::fs::read_to_string(&args_file).expect("cargo was run");
    assert!(args.starts_with("build"), "{args}");
    assert!(!args.contains("--quiet") && !args.contains("-q"), "cargo shows progress: {args}");
}
