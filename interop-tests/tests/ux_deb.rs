//! `ci/deb` builds a Debian package that can replace the legacy pvm, libpvm3 and pvm-dev
//! packages; its metadata, file list and the installed programs are checked here.

use std::path::Path;
use std::process::Command;

fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ux_deb_package_replaces_legacy_packages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let out = std::env::temp_dir().join(format!("ux-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let printed = sh(Command::new("timeout")
        .args(["-k", "5", "900"])
        .arg(root.join("ci/deb"))
        .args(["--profile", "debug", "--fast", "--out"])
        .arg(&out)
        .env("CARGO", cargo)
        .env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(cargo)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ));
    let deb = printed
        .lines()
        .last()
        .expect("ci/deb prints the package path")
        .to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{printed}");

    let info = sh(Command::new("dpkg-deb").args(["--info", &deb]));
    for want in [
        "Package: pvm-rs",
        "Provides: pvm (= 3.4.6-99",
        "libpvm3 (= 3.4.6-99",
        "Conflicts: pvm, libpvm3, pvm-dev",
        "Replaces: pvm, libpvm3, pvm-dev",
    ] {
        assert!(info.contains(want), "control lacks {want:?}:\n{info}");
    }
    let contents = sh(Command::new("dpkg-deb").args(["--contents", &deb]));
    for want in [
        "./usr/bin/pvmd",
        "./usr/bin/pvm\n",
        "./usr/bin/pvmgs",
        "./usr/bin/pvmtrace",
        "./usr/bin/pvmdump",
        "./usr/lib/pvm3/lib/pvmd -> ../../../bin/pvmd",
        "./usr/lib/x86_64-linux-gnu/libpvm3.so.3 -> libpvm3.so.3.4.6",
        "./usr/lib/x86_64-linux-gnu/libgpvm3.so.3 -> libgpvm3.so.3.4.6",
        "./usr/include/pvm3.h",
        "./usr/share/man/man8/pvmd.8.gz",
        "./usr/share/man/man1/pvm.1.gz",
        "./usr/share/man/man1/pvmtrace.1.gz",
        "./usr/share/man/man1/pvmdump.1.gz",
        "./usr/share/man/man3/pvm_migrate.3PVM.gz",
        "./usr/share/man/man3/pvm_checkpoint.3PVM.gz",
        "./usr/share/man/man3/pvm_restart.3PVM.gz",
    ] {
        let found = contents.lines().any(|l| {
            let w = want.trim_end_matches('\n');
            if want.ends_with('\n') {
                l.ends_with(&format!(" {w}"))
            } else {
                l.contains(&format!(" {w}"))
            }
        });
        assert!(found, "package lacks {want:?}:\n{contents}");
    }

    // Unpacked, the programs run and the library has the legacy soname.
    let x = out.join("x");
    sh(Command::new("dpkg-deb").args(["-x", &deb]).arg(&x));
    let help = sh(Command::new(x.join("usr/bin/pvm")).arg("--help"));
    assert!(help.contains("usage: pvm"), "{help}");
    let v = sh(Command::new(x.join("usr/bin/pvmd")).arg("--version"));
    assert!(!v.trim().is_empty());
    let arch = sh(&mut Command::new(x.join("usr/bin/pvmgetarch")));
    assert_eq!(arch.trim(), "LINUX64");
    let dynamic = sh(Command::new("readelf")
        .arg("-d")
        .arg(x.join("usr/lib/x86_64-linux-gnu/libpvm3.so.3.4.6")));
    assert!(dynamic.contains("[libpvm3.so.3]"), "{dynamic}");
    let _ = std::fs::remove_dir_all(&out);
}
