//! The package registries' own clients, run as child processes: `apt-get download` +
//! `dpkg -x` for Debian packages (the only way a Debian package is had without root).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::DataError;

fn run(cmd: &mut Command, what: &str) -> Result<String, DataError> {
    let out = cmd.output().map_err(|e| {
        DataError::Input(format!(
            "{what}: could not run {:?}: {e}",
            cmd.get_program()
        ))
    })?;
    if !out.status.success() {
        return Err(DataError::Input(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Download Debian package `name` into `work` and unpack it there; returns the unpacked root
/// and the package version.
pub fn debian(name: &str, work: &Path) -> Result<(PathBuf, String), DataError> {
    run(
        Command::new("apt-get")
            .arg("download")
            .arg(name)
            .current_dir(work),
        &format!("apt-get download {name}"),
    )?;
    let deb = std::fs::read_dir(work)
        .map_err(|e| DataError::Input(format!("{}: {e}", work.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")))
        })
        .ok_or_else(|| DataError::Input(format!("apt-get download {name}: no .deb appeared")))?;
    let version = run(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .arg("Version"),
        "dpkg-deb --field",
    )?
    .trim()
    .to_string();
    let root = work.join("root");
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&root),
        &format!("dpkg -x {}", deb.display()),
    )?;
    Ok((root, version))
}
