//! A real SMTP server for the tests: Debian's `python3-aiosmtpd`, started on a free 127.0.0.1 port with
//! the JSON-lines handler in `tests/smtp_sink.py`, plain or with STARTTLS under a throwaway CA made with
//! `openssl`. Missing tools fail the test with the command that installs them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const SETUP: &str = "run `cargo xtask setup` (it installs the Debian packages python3-aiosmtpd, python3-dbusmock, \
                     dbus and openssl)";

/// A throwaway CA and a leaf certificate for `localhost` and 127.0.0.1 signed by it.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl ({e}): {SETUP}"));
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Herald test CA"],
        ]
        .concat());
        run(&[&["req"][..], &ec, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]]
            .concat());
        std::fs::write(
            dir.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write leaf.ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        Certs { ca: dir.join("ca.pem"), cert: dir.join("leaf.pem"), key: dir.join("leaf.key") }
    }
}

/// How the server protects the session.
pub enum Security<'a> {
    Plain,
    /// Offers STARTTLS and requires it before MAIL.
    Starttls(&'a Certs),
    /// TLS from the first byte (SMTPS).
    Implicit(&'a Certs),
}

/// A running aiosmtpd; killed when dropped.
pub struct Sink {
    child: Child,
    pub port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sink {
    /// Start aiosmtpd.
    pub fn start(security: Security<'_>) -> Sink {
        Sink::spawn(|cmd, port, out| {
            cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
            match security {
                Security::Plain => {}
                Security::Starttls(certs) => {
                    cmd.arg("--tlscert").arg(&certs.cert).arg("--tlskey").arg(&certs.key);
                }
                Security::Implicit(certs) => {
                    cmd.arg("--smtpscert").arg(&certs.cert).arg("--smtpskey").arg(&certs.key);
                }
            }
            cmd.args(["-c", "smtp_sink.JsonSink"]).arg(out);
        })
    }

    /// Start aiosmtpd requiring STARTTLS and a login with `user` and `password` (through
    /// `tests/smtp_sink.py`, since aiosmtpd's command line has no login option).
    pub fn start_with_login(certs: &Certs, user: &str, password: &str) -> Sink {
        Sink::spawn(|cmd, port, out| {
            cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py"))
                .arg(port.to_string())
                .arg(out)
                .arg(&certs.cert)
                .arg(&certs.key)
                .args([user, password]);
        })
    }

    fn spawn(args: impl FnOnce(&mut Command, u16, &Path)) -> Sink {
        let check = Command::new(PYTHON).args(["-c", "import aiosmtpd"]).output();
        match check {
            Ok(out) if out.status.success() => {}
            _ => panic!("{PYTHON} cannot import aiosmtpd: {SETUP}"),
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("mails.jsonl");
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut cmd = Command::new(PYTHON);
        args(&mut cmd, port, &out);
        cmd.env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests"));
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().expect("start aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
                panic!("aiosmtpd exited with {status} before listening: {err}");
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not listen on 127.0.0.1:{port} within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sink { child, port, out, _dir: dir }
    }

    /// Every mail received so far, in order.
    pub fn mails(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("the sink writes JSON lines"))
            .collect()
    }

    /// Wait (polling, 10 s at most) until `n` mails arrived; all of them.
    pub fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(Instant::now() < deadline, "expected {n} mails, got {}", mails.len());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
