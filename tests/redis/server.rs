//! A `redis-server` of the test's own, on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    pub(crate) url: String,
}

impl RedisServer {
    /// A fresh server, or `None` (with the reason printed) when none can be started here.
    /// Under `CI`, failing to start one fails the test instead.
    pub(crate) fn start() -> Option<Self> {
        let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => return skip(&format!("no free loopback port: {e}")),
        };
        match spawn(port) {
            Ok(child) => Some(Self {
                child: Some(child),
                port,
                url: format!("redis://127.0.0.1:{port}"),
            }),
            Err(e) => skip(&format!("cannot start redis-server: {e}")),
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port).expect("restart redis-server on the same port"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn skip(why: &str) -> Option<RedisServer> {
    assert!(
        std::env::var_os("CI").is_none(),
        "redis test cannot run under CI: {why}"
    );
    eprintln!("skipping redis test: {why}");
    None
}

/// Starts `redis-server` and returns once it logs that it accepts connections.
fn spawn(port: u16) -> std::io::Result<Child> {
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--logfile", "", "--daemonize", "no"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line?.contains("Ready to accept connections") {
            // keep draining the log so the server never blocks on a full pipe
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(child);
        }
    }
    let _ = child.kill();
    let status = child.wait()?;
    Err(std::io::Error::other(format!(
        "redis-server exited before it was ready: {status}"
    )))
}
