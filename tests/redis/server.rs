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
        match spawn(port, &[]) {
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
        self.child = Some(spawn(self.port, &[]).expect("restart redis-server on the same port"));
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

/// Starts `redis-server` with `extra` arguments; returns once it accepts connections.
fn spawn(port: u16, extra: &[&str]) -> std::io::Result<Child> {
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
        .args(extra)
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

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A three-node Redis Cluster of the test's own, torn down (processes and files) on drop.
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
    pub(crate) urls: Vec<String>,
}

impl RedisCluster {
    pub(crate) fn start() -> Option<Self> {
        match Self::try_start() {
            Ok(cluster) => Some(cluster),
            Err(e) => {
                let _ = skip(&format!("cannot start a redis cluster: {e}"));
                None
            }
        }
    }

    fn try_start() -> std::io::Result<Self> {
        // one directory per cluster: tests of one binary run their clusters side by side,
        // and each removes its own directory when dropped
        static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("limitpal-cluster-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut nodes = Vec::new();
        let mut urls = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let conf = dir.join(format!("nodes-{port}.conf"));
            let child = spawn(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap_or("nodes.conf"),
                    "--dir",
                    dir.to_str().unwrap_or("."),
                ],
            )?;
            nodes.push(RedisServer {
                child: Some(child),
                port,
                url: format!("redis://127.0.0.1:{port}"),
            });
            urls.push(format!("redis://127.0.0.1:{port}"));
            addrs.push(format!("127.0.0.1:{port}"));
        }
        let cluster = Self { nodes, dir, urls };
        let mut create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // bounded: a node that died makes `--cluster create` wait for it forever
        let mut created = None;
        for _ in 0..600 {
            if let Some(status) = create.try_wait()? {
                created = Some(status);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let Some(created) = created else {
            let _ = create.kill();
            let _ = create.wait();
            return Err(std::io::Error::other(
                "redis-cli --cluster create took over 30 s",
            ));
        };
        if !created.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli --cluster create: {created}"
            )));
        }
        // every node must report the cluster healthy (slots agreed) before the test runs
        for port in cluster.nodes.iter().map(|n| n.port) {
            let mut ok = false;
            for _ in 0..2000 {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()?;
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
            }
            if !ok {
                return Err(std::io::Error::other("the cluster never reported ok"));
            }
        }
        Ok(cluster)
    }

    /// Keys stored on each node.
    pub(crate) fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "dbsize"])
                    .output()
                    .ok()
                    .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
