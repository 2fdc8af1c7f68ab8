//! The Debian packages the notifier tests run against: `python3-aiosmtpd` (a real SMTP server for
//! herald-email), `dbus` and `python3-dbusmock` (a session bus and a notification server for
//! herald-desktop), `openssl` (the throwaway CA and certificate of the STARTTLS test), `chromium` and
//! `chromium-driver` (the dashboard's browser tests, over WebDriver), `tzdata` (the time zones of quiet hours,
//! which herald-daemon reads from /usr/share/zoneinfo).
//!
//! One `dpkg-query` call checks all of them, so a run with everything present takes milliseconds;
//! `apt-get update` and `apt-get install` run only when something is missing (through `sudo` when not
//! root). On a system without dpkg it prints what to install and goes on: the tests that need a package
//! fail with a message naming it.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

/// The packages, and what needs each.
pub const PACKAGES: [(&str, &str); 7] = [
    ("python3-aiosmtpd", "herald-email tests (SMTP server)"),
    ("python3-dbusmock", "herald-desktop tests (notification server)"),
    ("dbus", "herald-desktop tests (dbus-run-session)"),
    ("openssl", "herald-email tests (STARTTLS certificates)"),
    ("chromium", "dashboard browser tests (headless Chromium)"),
    ("chromium-driver", "dashboard browser tests (chromedriver)"),
    ("tzdata", "herald-daemon quiet hours tests (Europe/Berlin from /usr/share/zoneinfo)"),
];

/// Install whichever of [`PACKAGES`] is missing.
pub fn ensure() -> Result<()> {
    let names: Vec<&str> = PACKAGES.iter().map(|(name, _)| *name).collect();
    let Some(missing) = missing(&names) else {
        eprintln!(
            "xtask: no dpkg-query here (not Debian?): install {} yourself for the notifier tests",
            names.join(", ")
        );
        return Ok(());
    };
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages {}", missing.join(", "));
    apt_get(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(missing.iter().copied());
    apt_get(&install)?;
    let still = self::missing(&missing).unwrap_or_default();
    if !still.is_empty() {
        bail!("apt-get ran but {} is still not installed", still.join(", "));
    }
    Ok(())
}

/// The packages among `names` that are not installed; `None` when dpkg-query is not available.
fn missing<'a>(names: &[&'a str]) -> Option<Vec<&'a str>> {
    // Unknown packages make dpkg-query exit 1 and complain on stderr; the known ones are still listed.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\\n")
        .args(names)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let installed: Vec<&str> = listed
        .lines()
        .filter(|line| line.ends_with(" install ok installed"))
        .filter_map(|line| line.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name))
        .collect();
    Some(names.iter().copied().filter(|name| !installed.contains(name)).collect())
}

fn apt_get(args: &[&str]) -> Result<()> {
    let root =
        Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut cmd = if root {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    crate::step(&format!("apt-get {}", args.join(" ")), cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_is_missing() {
        // On a system without dpkg there is nothing to check.
        let Some(missing) = missing(&["dpkg", "herald-no-such-package"]) else { return };
        assert_eq!(missing, ["herald-no-such-package"]);
    }
}
